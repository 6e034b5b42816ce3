//! A fleet of senders for `client/web/test/e2e/bench_fanout.ts` (`SENDERS=N npm run
//! bench:browser`): one client per token logs in and prints `ready`, then reads a group id
//! on stdin, and every sender sends `--rate / N` messages/s into that group for `--seconds`,
//! pipelined (it does not wait for an answer before the next send), open loop: message `i`
//! of a sender is due at `start + i / (rate / N)` and its payload carries that due time as
//! wall clock (`{"t": ms since the Unix epoch, "s": sender, "i": i}`), so a sender that
//! falls behind shows up in the receivers' latency instead of hiding in a lower rate. Ends
//! with one JSON line: messages sent, answered Ok and failed, and when the last was sent
//! and answered.
//!
//! Not a load generator of its own (see `convoke-loadgen`, which starts its brokers): it
//! drives a broker someone else started, beside receivers someone else reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use convoke_client::Client;

#[derive(Debug, Parser)]
struct Args {
    /// The broker's QUIC address, host:port.
    #[arg(long)]
    server: String,
    /// The broker's certificate (PEM), trusted as CA.
    #[arg(long)]
    ca: String,
    /// Total messages per second, shared evenly by the senders.
    #[arg(long)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long)]
    seconds: f64,
    /// One token per sender (each a member of the group it will be given).
    #[arg(long = "token", required = true)]
    tokens: Vec<String>,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    ok: AtomicU64,
    err: AtomicU64,
}

fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let mut clients = Vec::new();
    for (n, token) in args.tokens.iter().enumerate() {
        let client = Client::builder()
            .server(args.server.clone())
            .token(token.clone())
            .device_id(format!("bench-sender-{n}"))
            .ca_file(args.ca.clone())
            .ignore_events()
            .connect()
            .await?;
        clients.push(client);
    }
    println!("ready");
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await??;
    let group = Arc::<str>::from(line.trim());

    let per_sender = args.rate / clients.len() as f64;
    let total = (per_sender * args.seconds).round() as u64;
    let counts = Arc::new(Counts::default());
    let (start, wall0) = (Instant::now(), wall_ms());
    let mut senders = Vec::new();
    for (s, client) in clients.into_iter().enumerate() {
        let (group, counts) = (group.clone(), counts.clone());
        // Senders are offset by a fraction of one interval so their sends interleave.
        let offset = s as f64 / args.tokens.len() as f64;
        senders.push(tokio::spawn(async move {
            let mut i = 0u64;
            while i < total {
                // Message i is due once x = elapsed * rate - offset reaches i.
                let x = start.elapsed().as_secs_f64() * per_sender - offset;
                let due = if x < 0.0 {
                    0
                } else {
                    (x.floor() as u64 + 1).min(total)
                };
                while i < due {
                    let t = wall0 + (i as f64 + offset) / per_sender * 1000.0;
                    let payload = format!("{{\"t\":{t:.3},\"s\":{s},\"i\":{i}}}");
                    let (client, group, done) = (client.clone(), group.clone(), counts.clone());
                    tokio::spawn(async move {
                        let r = client.send_group_message(&group, payload, false).await;
                        let c = if r.is_ok() { &done.ok } else { &done.err };
                        c.fetch_add(1, Ordering::Relaxed);
                    });
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    for sender in senders {
        sender.await?;
    }
    let sent_secs = start.elapsed().as_secs_f64();
    let sent = counts.sent.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts.ok.load(Ordering::Relaxed) + counts.err.load(Ordering::Relaxed) < sent
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "{{\"sent\":{sent},\"ok\":{},\"err\":{},\"sent_secs\":{sent_secs:.3},\"answered_secs\":{:.3}}}",
        counts.ok.load(Ordering::Relaxed),
        counts.err.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
