//! Many Convoke connections from one process: one client per user, a few hundred of them per
//! shared QUIC endpoint (one UDP socket with a large receive buffer), a bounded number of
//! handshakes in flight.

use super::servers::ConvokeServer;
use super::FleetOpts;
use anyhow::Context as _;
use convoke_client::{Client, ClientBuilder};
use futures::StreamExt as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// A QUIC endpoint on 127.0.0.1 whose socket has a `rcvbuf`-byte receive buffer (the default
/// ~208 KiB overflows under handshake bursts and fan-out bursts alike).
fn udp_endpoint(rcvbuf: usize) -> anyhow::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_recv_buffer_size(rcvbuf)?;
    sock.set_send_buffer_size(rcvbuf)?;
    sock.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    sock.set_nonblocking(true)?;
    let runtime = quinn::default_runtime().context("quinn has no runtime for this context")?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        sock.into(),
        runtime,
    )?)
}

/// Connects one client per user, `opts.per_endpoint` of them per shared endpoint, at most
/// `opts.concurrency` handshakes at a time. Returns the clients in `users` order.
pub async fn connect_all(
    server: &ConvokeServer,
    users: &[String],
    events: bool,
    opts: &FleetOpts,
) -> anyhow::Result<Vec<Client>> {
    let per = opts.per_endpoint.max(1);
    let endpoints = (0..users.len().div_ceil(per))
        .map(|_| udp_endpoint(opts.rcvbuf))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pem = std::fs::read(&server.cert)?;
    let mut base = Client::builder()
        .server_addr(server.addr)
        .server_name("localhost")
        .ca_pem(pem)
        .connect_timeout(Duration::from_secs(20))
        .request_timeout(Duration::from_secs(120));
    if !events {
        base = base.ignore_events();
    }
    let started = Instant::now();
    let total = users.len();
    let mut done = 0usize;
    let mut out = Vec::with_capacity(total);
    let mut stream = futures::stream::iter(users.iter().enumerate())
        .map(|(i, user)| {
            let b = base
                .clone()
                .endpoint(endpoints[i / per].clone())
                .token(server.token(user));
            connect_one(b, user)
        })
        .buffered(opts.concurrency.max(1));
    while let Some(client) = stream.next().await {
        out.push(client?);
        done += 1;
        if total >= 1000 && done % 1000 == 0 {
            eprintln!(
                "  connected {done}/{total} ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(out)
}

async fn connect_one(builder: ClientBuilder, user: &str) -> anyhow::Result<Client> {
    let mut last = None;
    for _ in 0..3 {
        match builder.clone().connect().await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "{user} cannot connect: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}
