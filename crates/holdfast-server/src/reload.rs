//! SIGHUP: the configuration read again from where it came from, and the TLS certificate.
//!
//! The keys in [`LIVE_KEYS`](crate::config::LIVE_KEYS) take their new values at once: the server's configuration is one
//! pointer swapped whole (`Server::config`), and every request, accept and timer reads it when
//! it begins, so new values apply to what begins after the reload while what is open goes on
//! (no connection is dropped, a timer already armed keeps its deadline). The other keys need a
//! restart: a new value of one is logged and the old one kept. A configuration that does not
//! read, parse or validate changes nothing (logged with the reason).

use std::sync::{Arc, Weak};

use crate::config::{self, Config, KEYS};
use crate::Server;

/// Where a SIGHUP gets the configuration again: for `holdfast serve`, the `--config` file read
/// anew under the environment and flags it started with. An `Err` is one line saying why.
pub type ConfigSource = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// What a re-read configuration changes.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The configuration to use: the new values of the live keys, the old ones of the rest.
    pub config: Config,
    /// Live keys that change: `key=value` (never a secret's value: none is live, and
    /// [`config::Secret`] shows redacted anyway).
    pub changed: Vec<String>,
    /// Keys that differ but need a restart: their names only.
    pub restart: Vec<&'static str>,
}

/// Compares `new` to `old` key by key: the live keys that changed, the others that differ.
pub(crate) fn plan(old: &Config, new: Config) -> Result<Plan, String> {
    let mut config = new;
    let mut changed = Vec::new();
    let mut restart = Vec::new();
    for key in KEYS {
        if key.same(old, &config) {
            continue;
        }
        if key.is_live() {
            changed.push(format!("{}={}", key.name, key.show(&config)));
        } else {
            restart.push(key.name);
            key.keep(&mut config, old);
        }
    }
    // Each half was valid on its own; checked again as a whole, in case a rule ever spans both.
    config::validate(&config).map_err(|e| e.to_string())?;
    Ok(Plan { config, changed, restart })
}

/// Reads the configuration again and applies what may change live; logs what it did.
pub(crate) fn reload_config(server: &Server, source: &ConfigSource) {
    let old = server.config_owned();
    let plan = match source().and_then(|new| plan(&old, new)) {
        Ok(plan) => plan,
        Err(error) => {
            // One line, whatever the TOML parser's message spans.
            let error = error.replace('\n', "; ");
            tracing::error!("configuration not reloaded, every old value stays in use: {error}");
            return;
        }
    };
    if !plan.restart.is_empty() {
        tracing::warn!("SIGHUP: restart to apply: {} (their old values stay in use)", plan.restart.join(", "));
    }
    if plan.changed.is_empty() {
        tracing::info!("configuration reloaded: no live key changed");
        return;
    }
    let config = Arc::new(plan.config);
    server.client_limits.reconfigure(&config);
    server.config.store(config);
    tracing::info!("configuration reloaded: {}", plan.changed.join(", "));
}

/// On each SIGHUP: the configuration from `source` (when there is one), then `tls_cert` and
/// `tls_key` read again (new connections get the new certificate, open ones keep their
/// sessions; a bad file is logged and the old one kept).
pub(crate) async fn on_sighup(
    server: Weak<Server>,
    mut hangups: tokio::signal::unix::Signal,
    source: Option<ConfigSource>,
) {
    while hangups.recv().await.is_some() {
        let Some(server) = server.upgrade() else { return };
        match &source {
            Some(source) => reload_config(&server, source),
            None if server.tls.is_none() => {
                tracing::info!("SIGHUP: nothing to reload (no configuration source, no tls_cert)");
            }
            None => {}
        }
        if let Some(tls) = &server.tls {
            match tls.reload() {
                Ok(()) => tracing::info!(cert = %server.config().tls_cert, "TLS certificate reloaded"),
                Err(e) => tracing::error!(error = %e, "TLS certificate not reloaded; the old one stays in use"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LIVE_KEYS;
    use std::time::Duration;

    #[test]
    fn live_keys_are_keys() {
        for name in LIVE_KEYS {
            assert!(KEYS.iter().any(|k| k.name == *name), "{name} is not a key");
        }
    }

    #[test]
    fn live_keys_change_and_the_rest_keep_their_old_values() {
        let old = Config::default();
        let mut new = Config::default();
        new.set("cors_origins", "https://b.example").unwrap();
        new.set("max_connections_per_ip", "3").unwrap();
        new.set("header_timeout", "5s").unwrap();
        new.set("listen", "127.0.0.1:1").unwrap();
        new.set("broker", "redis://127.0.0.1:6379").unwrap();
        new.set("jwt_secret", "hunter2").unwrap();
        let plan = plan(&old, new).unwrap();
        assert_eq!(plan.config.cors_origins, ["https://b.example"]);
        assert_eq!(plan.config.max_connections_per_ip, 3);
        assert_eq!(plan.config.header_timeout, Duration::from_secs(5));
        assert_eq!(plan.config.listen, old.listen, "listen needs a restart");
        assert_eq!(plan.config.broker, old.broker);
        assert!(plan.config.jwt_secret.is_empty(), "jwt_secret needs a restart");
        assert_eq!(plan.restart, ["listen", "broker", "jwt_secret"]);
        let changed = plan.changed.join(" ");
        assert!(changed.contains("cors_origins=[\"https://b.example\"]"), "{changed}");
        assert!(changed.contains("max_connections_per_ip=3") && changed.contains("header_timeout=5s"), "{changed}");
        assert!(!changed.contains("hunter2"));
    }

    #[test]
    fn a_changed_secret_is_seen_though_it_shows_redacted() {
        let old = Config { jwt_secret: "a".into(), ..Config::default() };
        let new = Config { jwt_secret: "b".into(), ..Config::default() };
        let plan = plan(&old, new).unwrap();
        assert_eq!(plan.restart, ["jwt_secret"]);
        assert_eq!(plan.config.jwt_secret.expose(), "a");
    }

    #[test]
    fn an_invalid_whole_changes_nothing() {
        let old = Config::default();
        let new = Config { heartbeat_min: Duration::from_secs(600), ..Config::default() };
        assert!(plan(&old, new).unwrap_err().contains("heartbeat_min"));
    }
}
