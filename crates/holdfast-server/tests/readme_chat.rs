//! The README's "A chat room in five minutes" page, taken from the README itself, served from its
//! own origin and run in headless Chromium (`tests/interop/readme_chat.js`) against a server
//! configured with the one line the README gives (`cors_origins`): two tabs talk through the
//! page's form, a third joins late and sees the history, and user text stays text. If the README's
//! page or its instructions stop working, this fails.

use holdfast_testkit::interop::{browser_command, Client, Reports};
use holdfast_testkit::TestServer;
use serde_json::Value;

/// The README's address of the server, replaced by the test server's.
const README_SERVER: &str = "http://127.0.0.1:7700";

/// The first `html` code block of the README section `heading`.
fn readme_page(heading: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split_once(heading).unwrap_or_else(|| panic!("README has no {heading:?}")).1;
    let block = section.split_once("```html\n").expect("an html block in the section").1;
    block.split_once("\n```").expect("the block's end").0.to_string()
}

#[tokio::test]
async fn the_readme_chat_page_works_from_another_origin() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(
        readme.contains("serve --cors-origins http://127.0.0.1:8000"),
        "the README's one config line for the chat page changed: update this test"
    );
    // The page's own origin: a free port (the README uses 8000, which may be taken here).
    let page_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let origin = format!("http://127.0.0.1:{page_port}");
    let allowed = origin.clone();
    let mut server = TestServer::start(move |c| c.cors_origins = vec![allowed]).await;

    let page = readme_page("## A chat room in five minutes");
    assert!(page.contains(README_SERVER), "the page names the server as {README_SERVER}");
    let page = page.replace(README_SERVER, server.url("").trim_end_matches('/'));
    let dir = std::env::temp_dir().join(format!("holdfast-readme-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("chat.html");
    std::fs::write(&file, page).unwrap();

    let mut node = browser_command("readme_chat.js");
    node.arg(&file).arg(page_port.to_string());
    let mut client = Client::spawn(node);
    let mut reports = Reports::new();
    reports.until(&mut client, "the chat exchange", |r| r.seen.iter().any(|x| x["type"] == "done")).await;
    let trouble = reports.filter(|r| r["type"] != "tab" && r["type"] != "done");
    assert!(trouble.is_empty(), "the page failed: {trouble:?}\nstderr:\n{}", client.stderr());

    let tabs: Vec<&Value> = reports.filter(|r| r["type"] == "tab");
    let both = ["alice: hello from alice", "bob: <b>bob</b> here"];
    for tab in &tabs {
        assert_eq!(tab["markup"], 0, "user text became markup: {tab}");
        assert!(tab["status"].as_str().unwrap().starts_with("connected ("), "{tab}");
    }
    // Each line once, in order, in every tab that saw both (the late one from the history).
    for tab in tabs.iter().filter(|t| t["lines"].as_array().unwrap().len() >= 2) {
        assert_eq!(tab["lines"], serde_json::json!(both), "{tab}");
    }
    let late = tabs.iter().find(|t| t["tab"] == 2).expect("the late tab's report");
    assert_eq!(late["lines"], serde_json::json!(both), "history on join");
    let _ = std::fs::remove_dir_all(&dir);
    server.stop().await;
}
