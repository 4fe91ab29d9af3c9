//! The SDK over TLS against a real server with `tls_cert`/`tls_key` from a throw-away CA: publish
//! and subscribe on every transport (`https://`, `wss://`), a reconnection that shakes hands
//! again, a shared pool's own TLS options, and the clear, prompt errors of a client that does not
//! trust the server's CA or speaks TLS to a plain-HTTP port.

use std::time::Duration;

use futures_util::StreamExt;
use holdfast_client::{
    Event, Heartbeat, HttpPool, Message, Publisher, State, Subscriber, SubscriberBuilder, TlsOptions, Transport,
};
use holdfast_testkit::fast_pacing as fast;
use holdfast_testkit::tls::TestCa;
use holdfast_testkit::TestServer;

/// Longest wait for one expected event.
const WAIT: Duration = Duration::from_secs(15);

const TRANSPORTS: [Transport; 5] =
    [Transport::Ws, Transport::Sse, Transport::Stream, Transport::LongPoll, Transport::Poll];

/// A server that speaks TLS only, with the CA's certificate for 127.0.0.1 and localhost.
async fn tls_server(ca: &TestCa) -> TestServer {
    let (cert, key) = (ca.cert_path(), ca.key_path());
    TestServer::start(|config| {
        fast(config);
        config.set("tls_cert", cert.to_str().unwrap()).expect("tls_cert");
        config.set("tls_key", key.to_str().unwrap()).expect("tls_key");
    })
    .await
}

fn subscriber(server: &str, channel: &str, transport: Transport) -> SubscriberBuilder {
    Subscriber::builder()
        .server(server)
        .channel(channel)
        .transport(transport)
        .heartbeat(Heartbeat::Fixed(Duration::from_secs(1)))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(100))
}

/// The next event (an `Err` too), or a panic after `WAIT`.
async fn next(sub: &mut Subscriber) -> holdfast_client::Result<Event> {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("subscriber ended"),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

/// Skips events until the subscriber is connected; gives the server it names.
async fn connected(sub: &mut Subscriber) -> String {
    loop {
        match next(sub).await {
            Ok(Event::State(State::Connected { server, .. })) => return server,
            Ok(Event::State(State::Reconnecting { cause, .. })) if cause.contains("TLS") => {
                panic!("TLS failed on the way: {cause}")
            }
            Ok(_) => {}
            Err(e) => panic!("subscriber failed: {e}"),
        }
    }
}

/// The next `n` messages (other events skipped).
async fn messages(sub: &mut Subscriber, n: usize) -> Vec<Message> {
    let mut got = Vec::new();
    while got.len() < n {
        match next(sub).await {
            Ok(Event::Message(m)) => got.push(m),
            Ok(_) => {}
            Err(e) => panic!("subscriber failed: {e}"),
        }
    }
    got
}

fn texts(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.text().unwrap().to_string()).collect()
}

#[tokio::test]
async fn every_transport_publishes_and_subscribes_over_tls() {
    let ca = TestCa::new();
    let server = tls_server(&ca).await;
    // The certificate names both; the IP address and the DNS name are checked differently.
    for host in ["127.0.0.1", "localhost"] {
        let base = format!("https://{host}:{}", server.addr.port());
        let tls = TlsOptions::new().root_certificate_pem(ca.ca_pem()).unwrap();
        let publisher = Publisher::builder().server(&base).tls(&tls).build().unwrap();
        for transport in TRANSPORTS {
            let channel = format!("tls-{}-{host}", transport.name()).replace('.', "_");
            let mut sub = subscriber(&base, &channel, transport).tls(&tls).build().unwrap();
            assert_eq!(connected(&mut sub).await, base);
            let sent: Vec<String> = (1..=3).map(|i| format!("{transport:?} {i} é")).collect();
            for text in &sent {
                publisher.publish(&channel, text.clone(), Some("chat")).await.unwrap();
            }
            let got = messages(&mut sub, 3).await;
            assert_eq!(texts(&got), sent, "{transport:?} on {base}");
            assert!(got.iter().all(|m| m.event == "chat" && m.channel == channel), "{got:?}");
        }
    }
}

#[tokio::test]
async fn the_builders_take_a_root_pem_and_refuse_one_without_a_certificate() {
    let ca = TestCa::new();
    let server = tls_server(&ca).await;
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let publisher = Publisher::builder().server(&base).root_certificate_pem(ca.ca_pem()).build().unwrap();
    let published = publisher.publish("pem", "one", None).await.unwrap();
    assert_eq!(published.channel, "pem");
    let mut sub =
        subscriber(&base, "pem", Transport::Sse).root_certificate_pem(ca.ca_pem()).history(1).build().unwrap();
    assert_eq!(texts(&messages(&mut sub, 1).await), ["one"]);
    let e = Publisher::builder().server(&base).root_certificate_pem("not a PEM").build().unwrap_err();
    assert!(e.is_invalid(), "{e}");
    let e = subscriber(&base, "pem", Transport::Ws).root_certificate_pem(b"").build().unwrap_err();
    assert!(e.is_invalid(), "{e}");
}

#[tokio::test]
async fn a_restart_is_a_new_handshake_and_the_subscription_resumes() {
    let ca = TestCa::new();
    let mut server = tls_server(&ca).await;
    let addr = server.addr;
    let base = format!("https://127.0.0.1:{}", addr.port());
    let tls = TlsOptions::new().root_certificate_pem(ca.ca_pem()).unwrap();
    let publisher = Publisher::builder().server(&base).tls(&tls).build().unwrap();
    for transport in [Transport::Ws, Transport::Stream, Transport::LongPoll] {
        let channel = format!("again-{}", transport.name());
        let mut sub = subscriber(&base, &channel, transport).tls(&tls).build().unwrap();
        connected(&mut sub).await;
        publisher.publish(&channel, "before", None).await.unwrap();
        assert_eq!(texts(&messages(&mut sub, 1).await), ["before"]);
        server.stop().await;
        let (cert, key) = (ca.cert_path(), ca.key_path());
        server = TestServer::start_on(addr, |config| {
            fast(config);
            config.set("tls_cert", cert.to_str().unwrap()).unwrap();
            config.set("tls_key", key.to_str().unwrap()).unwrap();
        })
        .await;
        // Whether the subscriber is back yet or not: its cursor points into the old server's
        // epoch, so it resumes from the first message the new one has.
        // The publisher's pooled connection died with the old server; it reconnects by itself.
        publisher.publish(&channel, "after", None).await.unwrap();
        assert_eq!(texts(&messages(&mut sub, 1).await), ["after"], "{transport:?}");
    }
}

/// Every path of a client that does not trust the CA fails at once with a TLS error naming the
/// cause: no hang, no endless reconnection.
#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_gets_a_clear_error() {
    let ca = TestCa::new();
    let server = tls_server(&ca).await;
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let check = |e: &holdfast_client::Error, what: &str| {
        assert!(e.is_tls() && !e.is_transient(), "{what}: {e:?}");
        let words = e.to_string();
        assert!(words.contains("invalid peer certificate") && words.contains("--cacert"), "{what}: {words}");
    };
    // The default roots (the web PKI) do not include a test CA.
    let e = Publisher::new(&base).unwrap().publish("x", "y", None).await.unwrap_err();
    check(&e, "publish");
    // Another CA's certificate only, as a private deployment would configure it.
    let other = TestCa::new();
    let tls = TlsOptions::new().root_certificate_pem(other.ca_pem()).unwrap().web_pki_roots(false);
    let e = Publisher::builder().server(&base).tls(&tls).build().unwrap().publish("x", "y", None).await.unwrap_err();
    check(&e, "publish, other CA");
    for transport in TRANSPORTS {
        let mut sub = subscriber(&base, "x", transport).tls(&tls).build().unwrap();
        let e = loop {
            match next(&mut sub).await {
                Ok(Event::State(State::Connecting)) => {}
                Ok(other) => panic!("{transport:?}: {other:?} before the error"),
                Err(e) => break e,
            }
        };
        check(&e, transport.name());
        assert!(tokio::time::timeout(WAIT, sub.next()).await.unwrap().is_none(), "{transport:?} goes on");
    }
}

#[tokio::test]
async fn https_to_a_plain_http_port_is_a_tls_error_not_a_hang() {
    let server = TestServer::start(fast).await;
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let e = Publisher::new(&base).unwrap().publish("x", "y", None).await.unwrap_err();
    assert!(e.is_tls(), "{e:?}");
    for transport in [Transport::Ws, Transport::Sse] {
        let mut sub = subscriber(&base, "x", transport).build().unwrap();
        let e = loop {
            if let Err(e) = next(&mut sub).await {
                break e;
            }
        };
        assert!(e.is_tls(), "{transport:?}: {e:?}");
    }
}

/// Polls through a shared pool use the pool's TLS options (the subscriber's own are for its
/// streaming links): a pool given the CA serves a poller that was not, and a pool without it
/// fails it.
#[tokio::test]
async fn a_shared_pool_checks_certificates_with_its_own_options() {
    let ca = TestCa::new();
    let server = tls_server(&ca).await;
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let tls = TlsOptions::new().root_certificate_pem(ca.ca_pem()).unwrap();
    let trusting = HttpPool::with_tls(Duration::from_secs(30), Duration::from_secs(2), 4, &tls).unwrap();
    let publisher = Publisher::builder().server(&base).http_pool(&trusting).build().unwrap();
    let mut sub = subscriber(&base, "pooled", Transport::LongPoll).http_pool(&trusting).build().unwrap();
    connected(&mut sub).await;
    publisher.publish("pooled", "via the pool", None).await.unwrap();
    assert_eq!(texts(&messages(&mut sub, 1).await), ["via the pool"]);

    let default_pool = HttpPool::new().unwrap();
    let mut sub = subscriber(&base, "pooled", Transport::Poll).tls(&tls).http_pool(&default_pool).build().unwrap();
    let e = loop {
        if let Err(e) = next(&mut sub).await {
            break e;
        }
    };
    assert!(e.is_tls(), "{e:?}");
}
