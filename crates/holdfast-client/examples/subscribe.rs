//! Subscribes to channels and prints what comes: messages on stdout, the rest on stderr.
//!
//! ```sh
//! cargo run -p holdfast-client --example subscribe -- room,lobby sse
//! ```

use futures_util::StreamExt;
use holdfast_client::{Event, Heartbeat, Subscriber, Transport};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let channels = args.next().ok_or("usage: subscribe CHANNEL[,CHANNEL...] [ws|sse|longpoll|poll|stream]")?;
    let transport: Transport = args.next().as_deref().unwrap_or("ws").parse()?;
    let server = std::env::var("HOLDFAST_SERVER").unwrap_or_else(|_| holdfast_client::DEFAULT_SERVER.into());
    let mut sub = Subscriber::builder()
        .server(server)
        .channels(channels.split(','))
        .transport(transport)
        .heartbeat(Heartbeat::Adaptive {
            min: std::time::Duration::from_secs(5),
            max: std::time::Duration::from_secs(120),
            step: std::time::Duration::from_secs(15),
        })
        .build()?;
    while let Some(event) = sub.next().await {
        match event? {
            Event::Message(m) => println!("{} {}: {}", m.channel, m.event, String::from_utf8_lossy(&m.data)),
            Event::Gap(gap) => eprintln!("gap in {}: {:?} messages lost", gap.channel, gap.lost),
            other => eprintln!("{other:?}"),
        }
    }
    Ok(())
}
