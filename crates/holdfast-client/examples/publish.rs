//! Publishes each line of stdin (or the arguments) to a channel.
//!
//! ```sh
//! cargo run -p holdfast-client --example publish -- room hello world
//! seq 10 | cargo run -p holdfast-client --example publish -- room
//! ```

use std::io::BufRead;

use holdfast_client::Publisher;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let channel = args.next().ok_or("usage: publish CHANNEL [MESSAGE...]")?;
    let server = std::env::var("HOLDFAST_SERVER").unwrap_or_else(|_| holdfast_client::DEFAULT_SERVER.into());
    let publisher = Publisher::new(server)?;
    let mut messages: Vec<String> = args.collect();
    if messages.is_empty() {
        messages = std::io::stdin().lock().lines().collect::<Result<_, _>>()?;
    }
    for message in messages {
        let published = publisher.publish(&channel, message, None).await?;
        println!("{} ({} subscribers)", published.id, published.subscribers);
    }
    Ok(())
}
