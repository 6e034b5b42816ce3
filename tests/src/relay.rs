//! [`Relay`]: a userspace UDP relay between clients and one upstream (the broker), standing in
//! for the network where this kernel has no netem: one-way delay per direction, random loss,
//! reordering, a silent cut in both directions, and NAT rebinding (the upstream sees every
//! client come from a new port).
//!
//! Shape: one task owns the client-facing socket and, per client flow (source address), an
//! upstream socket connected to the upstream address; a small reader task per upstream socket
//! hands what the upstream sends back to it. Datagrams wait in one FIFO per direction with
//! the time they are due (a timer queue: the task sleeps until the earliest due time, so a
//! held datagram never blocks the others). Dropping the [`Relay`] aborts its tasks, which
//! closes every socket. Only tokio, std and rand, so that benches can use it too.

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;

/// Largest datagram relayed (the largest UDP payload).
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams waiting in one direction beyond which new ones are dropped (a full router queue),
/// so that a long delay at a high rate cannot grow memory without bound.
const QUEUE_LIMIT: usize = 100_000;
/// Longest a datagram picked for reordering waits for a later one to overtake it.
const REORDER_HOLD: Duration = Duration::from_millis(10);
/// Datagrams from the upstream readers waiting for the relay task.
const UPSTREAM_CHANNEL: usize = 4096;

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client to the upstream.
    ToUpstream,
    /// From the upstream back to a client.
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToUpstream => 0,
            Direction::ToClient => 1,
        }
    }
}

/// How the relay treats datagrams; every field can also be changed while it runs.
#[derive(Debug, Clone, Default)]
pub struct RelayOptions {
    /// One-way delay from clients to the upstream. Default none.
    pub delay_to_upstream: Duration,
    /// One-way delay from the upstream to clients. Default none.
    pub delay_to_client: Duration,
    /// Probability (0..=1) that a datagram is dropped, each direction. Default 0.
    pub drop_probability: f64,
    /// Probability (0..=1) that a datagram is held back until the next one in its direction
    /// has gone (the two swap places; it waits at most 10 ms for one). Default 0.
    pub reorder_probability: f64,
    /// Seed of the drop and reorder decisions, for a reproducible run. Default: random.
    pub seed: Option<u64>,
}

impl RelayOptions {
    /// The same one-way `delay` in both directions (a round trip takes twice as long).
    pub fn delay(delay: Duration) -> Self {
        Self {
            delay_to_upstream: delay,
            delay_to_client: delay,
            ..Self::default()
        }
    }
}

/// Datagram counters of a relay since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams sent on to the upstream.
    pub to_upstream: u64,
    /// Datagrams sent back to clients.
    pub to_client: u64,
    /// Datagrams from clients dropped (loss, cut, full queue, no upstream socket).
    pub dropped_to_upstream: u64,
    /// Datagrams from the upstream dropped.
    pub dropped_to_client: u64,
    /// Client flows seen (each has its own upstream socket).
    pub flows: u64,
    /// Upstream sockets replaced by [`Relay::rebind`].
    pub rebinds: u64,
}

impl RelayStats {
    /// Datagrams forwarded in `dir`.
    pub fn forwarded(&self, dir: Direction) -> u64 {
        match dir {
            Direction::ToUpstream => self.to_upstream,
            Direction::ToClient => self.to_client,
        }
    }

    /// Datagrams dropped in `dir`.
    pub fn dropped(&self, dir: Direction) -> u64 {
        match dir {
            Direction::ToUpstream => self.dropped_to_upstream,
            Direction::ToClient => self.dropped_to_client,
        }
    }
}

/// What the controls change and the relay task reads for each datagram.
#[derive(Debug)]
struct Settings {
    delay: [Duration; 2],
    drop_probability: f64,
    reorder_probability: f64,
}

#[derive(Debug, Default)]
struct Counters {
    forwarded: [AtomicU64; 2],
    dropped: [AtomicU64; 2],
    flows: AtomicU64,
    rebinds: AtomicU64,
}

/// State shared by the handle and the relay task.
#[derive(Debug)]
struct Control {
    settings: Mutex<Settings>,
    cut: AtomicBool,
    counters: Counters,
}

impl Control {
    fn settings(&self) -> MutexGuard<'_, Settings> {
        // Plain values: a panic while holding the lock cannot leave them inconsistent.
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dropped(&self, dir: Direction) {
        self.counters.dropped[dir.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Requests that need the relay task itself.
enum Command {
    /// Replace every flow's upstream socket; answers how many were replaced.
    Rebind(oneshot::Sender<io::Result<usize>>),
    /// The current upstream-side local address of every flow, by client address.
    Flows(oneshot::Sender<Vec<(SocketAddr, SocketAddr)>>),
    /// Stop the readers, then the relay task (closing every socket).
    Stop,
}

/// A running UDP relay in front of one upstream address. See the module documentation.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    control: Arc<Control>,
    commands: mpsc::UnboundedSender<Command>,
    /// The relay task; `None` once [`Relay::shutdown`] took it.
    task: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on 127.0.0.1:0 and relays every client's datagrams to `upstream` and back.
    pub async fn start(upstream: SocketAddr, opts: RelayOptions) -> io::Result<Relay> {
        let listen = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listen.local_addr()?;
        let control = Arc::new(Control {
            settings: Mutex::new(Settings {
                delay: [opts.delay_to_upstream, opts.delay_to_client],
                drop_probability: opts.drop_probability,
                reorder_probability: opts.reorder_probability,
            }),
            cut: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let rng = match opts.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (from_upstream, from_upstream_rx) = mpsc::channel(UPSTREAM_CHANNEL);
        let worker = Worker {
            listen,
            upstream,
            control: control.clone(),
            rng,
            flows: HashMap::new(),
            readers: JoinSet::new(),
            from_upstream,
            queues: [Queue::default(), Queue::default()],
        };
        let task = tokio::spawn(worker.run(commands_rx, from_upstream_rx));
        Ok(Relay {
            addr,
            upstream,
            control,
            commands,
            task: Some(task),
        })
    }

    /// The address clients send to (instead of the upstream's).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream address datagrams are relayed to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Sets the one-way delay of `dir`. Datagrams already waiting keep their due time, and
    /// order is kept: a shorter delay does not let new datagrams overtake waiting ones.
    pub fn set_delay(&self, dir: Direction, delay: Duration) {
        self.control.settings().delay[dir.index()] = delay;
    }

    /// Sets the probability (0..=1) that a datagram is dropped, in each direction.
    pub fn set_drop_probability(&self, p: f64) {
        self.control.settings().drop_probability = p.clamp(0.0, 1.0);
    }

    /// Sets the probability (0..=1) that a datagram swaps places with the next one.
    pub fn set_reorder_probability(&self, p: f64) {
        self.control.settings().reorder_probability = p.clamp(0.0, 1.0);
    }

    /// Silently drops every datagram, both ways, including those already waiting, until
    /// [`heal`](Self::heal): a network loss neither side is told about.
    pub fn cut(&self) {
        self.control.cut.store(true, Ordering::Relaxed);
    }

    /// Ends a [`cut`](Self::cut).
    pub fn heal(&self) {
        self.control.cut.store(false, Ordering::Relaxed);
    }

    /// Whether the relay is cut.
    pub fn is_cut(&self) -> bool {
        self.control.cut.load(Ordering::Relaxed)
    }

    /// Replaces the upstream socket of every flow by a new one on a new port, like a NAT
    /// that rebinds: the upstream sees each client's address change, and what it still sends
    /// to the old ports is lost. Returns how many flows were moved.
    pub async fn rebind(&self) -> io::Result<usize> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Rebind(tx))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Each flow's client address and the local address of its upstream socket (what the
    /// upstream sees as that client's address).
    pub async fn flows(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Flows(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        let c = &self.control.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RelayStats {
            to_upstream: get(&c.forwarded[0]),
            to_client: get(&c.forwarded[1]),
            dropped_to_upstream: get(&c.dropped[0]),
            dropped_to_client: get(&c.dropped[1]),
            flows: get(&c.flows),
            rebinds: get(&c.rebinds),
        }
    }

    /// Stops the relay and waits until every one of its sockets is closed (dropping it
    /// closes them too, a moment later).
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            if self.commands.send(Command::Stop).is_err() {
                task.abort();
            }
            let _ = task.await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The task owns every socket and the readers' JoinSet (which aborts the readers when
        // dropped): aborting it closes them all.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("the relay has stopped")
}

/// One client's path to the upstream.
#[derive(Debug)]
struct Flow {
    socket: Arc<UdpSocket>,
    reader: AbortHandle,
}

/// A datagram waiting for its due time.
#[derive(Debug)]
struct Held {
    due: Instant,
    client: SocketAddr,
    data: Vec<u8>,
}

/// One direction's waiting datagrams, in the order they leave.
#[derive(Debug, Default)]
struct Queue {
    fifo: VecDeque<Held>,
    /// A datagram picked for reordering, with the latest time it may wait for another.
    swap: Option<(Instant, Held)>,
}

impl Queue {
    /// Appends `held` keeping the queue's order: never due before the one ahead of it.
    fn push(&mut self, mut held: Held) {
        if let Some(last) = self.fifo.back() {
            held.due = held.due.max(last.due);
        }
        self.fifo.push_back(held);
    }

    /// When something in this queue next needs the relay task.
    fn next_wake(&self) -> Option<Instant> {
        let front = self.fifo.front().map(|h| h.due);
        let swap = self.swap.as_ref().map(|(until, _)| *until);
        match (front, swap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn len(&self) -> usize {
        self.fifo.len() + usize::from(self.swap.is_some())
    }
}

/// The relay task's state.
struct Worker {
    listen: UdpSocket,
    upstream: SocketAddr,
    control: Arc<Control>,
    rng: StdRng,
    flows: HashMap<SocketAddr, Flow>,
    readers: JoinSet<()>,
    from_upstream: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    queues: [Queue; 2],
}

impl Worker {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut from_upstream: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let wake = self
                .queues
                .iter()
                .filter_map(Queue::next_wake)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            // Unbiased: a flood in one direction must not starve the other.
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Rebind(reply)) => {
                        let _ = reply.send(self.rebind());
                    }
                    Some(Command::Flows(reply)) => {
                        let flows = self
                            .flows
                            .iter()
                            .filter_map(|(c, f)| Some((*c, f.socket.local_addr().ok()?)))
                            .collect();
                        let _ = reply.send(flows);
                    }
                    Some(Command::Stop) => {
                        self.readers.shutdown().await;
                        return;
                    }
                    // The handle is gone (normally it aborts us first).
                    None => return,
                },
                received = self.listen.recv_from(&mut buf) => {
                    // An error here is an ICMP report about some client: nothing to do.
                    if let Ok((n, client)) = received {
                        self.client_sent(client, buf[..n].to_vec());
                    }
                }
                Some((client, data)) = from_upstream.recv() => {
                    self.arrive(Direction::ToClient, client, data);
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            self.send_due().await;
        }
    }

    /// A datagram from `client`, whose first one opens its flow.
    fn client_sent(&mut self, client: SocketAddr, data: Vec<u8>) {
        if !self.flows.contains_key(&client) {
            if let Err(e) = self.open_flow(client) {
                // Short of running out of ports or descriptors this cannot happen; the
                // datagram is lost as on a broken router.
                eprintln!("relay: cannot open an upstream socket for {client}: {e}");
                self.control.dropped(Direction::ToUpstream);
                return;
            }
        }
        self.arrive(Direction::ToUpstream, client, data);
    }

    /// A new client: its own upstream socket, connected to the upstream so that it hears
    /// only the upstream.
    fn open_flow(&mut self, client: SocketAddr) -> io::Result<()> {
        let flow = self.bind_flow(client)?;
        self.flows.insert(client, flow);
        self.control.counters.flows.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn bind_flow(&mut self, client: SocketAddr) -> io::Result<Flow> {
        let local: IpAddr = match (self.upstream.ip().is_loopback(), self.upstream.is_ipv4()) {
            (true, true) => Ipv4Addr::LOCALHOST.into(),
            (true, false) => Ipv6Addr::LOCALHOST.into(),
            (false, true) => Ipv4Addr::UNSPECIFIED.into(),
            (false, false) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let std_socket = std::net::UdpSocket::bind((local, 0))?;
        std_socket.connect(self.upstream)?;
        std_socket.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std_socket)?);
        let reader = self.readers.spawn(read_upstream(
            socket.clone(),
            client,
            self.from_upstream.clone(),
        ));
        Ok(Flow { socket, reader })
    }

    fn rebind(&mut self) -> io::Result<usize> {
        let clients: Vec<SocketAddr> = self.flows.keys().copied().collect();
        for client in &clients {
            let flow = self.bind_flow(*client)?;
            if let Some(old) = self.flows.insert(*client, flow) {
                // Its socket closes once the reader is gone and this last clone is dropped.
                old.reader.abort();
            }
            self.control
                .counters
                .rebinds
                .fetch_add(1, Ordering::Relaxed);
        }
        // Forget the readers that have stopped (earlier rebinds' aborted ones).
        while self.readers.try_join_next().is_some() {}
        Ok(clients.len())
    }

    /// A datagram came in: dropped, or queued for its due time (perhaps swapped with the
    /// next one).
    fn arrive(&mut self, dir: Direction, client: SocketAddr, data: Vec<u8>) {
        let (delay, drop_p, reorder_p) = {
            let s = self.control.settings();
            (
                s.delay[dir.index()],
                s.drop_probability,
                s.reorder_probability,
            )
        };
        if self.control.cut.load(Ordering::Relaxed)
            || (drop_p > 0.0 && self.rng.random_bool(drop_p.clamp(0.0, 1.0)))
            || self.queues[dir.index()].len() >= QUEUE_LIMIT
        {
            self.control.dropped(dir);
            return;
        }
        let now = Instant::now();
        let held = Held {
            due: now + delay,
            client,
            data,
        };
        let queue = &mut self.queues[dir.index()];
        if let Some((_, earlier)) = queue.swap.take() {
            // The datagram that was held back leaves right behind this one.
            queue.push(held);
            queue.push(Held {
                due: now + delay,
                ..earlier
            });
        } else if reorder_p > 0.0 && self.rng.random_bool(reorder_p.clamp(0.0, 1.0)) {
            queue.swap = Some((now + REORDER_HOLD, held));
        } else {
            queue.push(held);
        }
    }

    /// Sends everything that has come due, and releases held-back datagrams nobody
    /// overtook in time.
    async fn send_due(&mut self) {
        let now = Instant::now();
        for dir in [Direction::ToUpstream, Direction::ToClient] {
            let queue = &mut self.queues[dir.index()];
            if matches!(queue.swap, Some((until, _)) if until <= now) {
                if let Some((_, held)) = queue.swap.take() {
                    queue.push(Held { due: now, ..held });
                }
            }
            while self.queues[dir.index()]
                .fifo
                .front()
                .is_some_and(|h| h.due <= now)
            {
                let Some(held) = self.queues[dir.index()].fifo.pop_front() else {
                    break;
                };
                self.send(dir, held).await;
            }
        }
    }

    async fn send(&self, dir: Direction, held: Held) {
        if self.control.cut.load(Ordering::Relaxed) {
            self.control.dropped(dir);
            return;
        }
        let sent = match dir {
            // Through the flow's socket of the moment: a rebind also moves what was waiting.
            Direction::ToUpstream => match self.flows.get(&held.client) {
                Some(flow) => flow.socket.send(&held.data).await.is_ok(),
                None => false,
            },
            Direction::ToClient => self.listen.send_to(&held.data, held.client).await.is_ok(),
        };
        if sent {
            self.control.counters.forwarded[dir.index()].fetch_add(1, Ordering::Relaxed);
        } else {
            self.control.dropped(dir);
        }
    }
}

/// Hands every datagram the upstream sends to `socket` to the relay task, as for `client`.
async fn read_upstream(
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    to_relay: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                if to_relay.send((client, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            // A connected UDP socket reports an ICMP "port unreachable" (the upstream was
            // down for a moment) on the next receive; the path itself is still there.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                eprintln!("relay: upstream socket for {client} failed: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    const WAIT: Duration = Duration::from_secs(5);
    const QUIET: Duration = Duration::from_millis(300);

    /// Each datagram the echo received: where from, and what.
    type Log = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

    /// A plain UDP echo socket that remembers where each datagram came from, and what it was.
    struct Echo {
        socket: Arc<UdpSocket>,
        seen: Log,
        task: JoinHandle<()>,
    }

    impl Echo {
        async fn start() -> Echo {
            let socket = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap());
            let seen = Log::default();
            let (s, log) = (socket.clone(), seen.clone());
            let task = tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                while let Ok((n, from)) = s.recv_from(&mut buf).await {
                    log.lock().unwrap().push((from, buf[..n].to_vec()));
                    let _ = s.send_to(&buf[..n], from).await;
                }
            });
            Echo { socket, seen, task }
        }

        fn addr(&self) -> SocketAddr {
            self.socket.local_addr().unwrap()
        }

        fn sources(&self) -> Vec<SocketAddr> {
            self.seen.lock().unwrap().iter().map(|s| s.0).collect()
        }

        fn payloads(&self) -> Vec<Vec<u8>> {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.1.clone())
                .collect()
        }
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn client() -> UdpSocket {
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap()
    }

    /// The next datagram on `socket`, within [`WAIT`].
    async fn recv(socket: &UdpSocket) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
            .await
            .expect("a datagram within the wait")
            .unwrap();
        buf.truncate(n);
        buf
    }

    /// Asserts that nothing arrives on `socket` for [`QUIET`].
    async fn expect_quiet(socket: &UdpSocket) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        if let Ok(r) = tokio::time::timeout(QUIET, socket.recv(&mut buf)).await {
            panic!("expected nothing, got {r:?}");
        }
    }

    /// Polls `cond` until it holds, or panics after [`WAIT`].
    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = StdInstant::now() + WAIT;
        while !cond() {
            assert!(StdInstant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn round_trip(socket: &UdpSocket, to: SocketAddr, body: &[u8]) -> Duration {
        let start = StdInstant::now();
        socket.send_to(body, to).await.unwrap();
        assert_eq!(recv(socket).await, body);
        start.elapsed()
    }

    #[tokio::test]
    async fn a_round_trip_takes_twice_the_one_way_delay_and_order_is_kept() {
        let echo = Echo::start().await;
        let delay = Duration::from_millis(40);
        let relay = Relay::start(echo.addr(), RelayOptions::delay(delay))
            .await
            .unwrap();
        let c = client().await;
        for i in 0..3u8 {
            let rtt = round_trip(&c, relay.addr(), &[i]).await;
            assert!(
                rtt >= 2 * delay && rtt < 2 * delay + Duration::from_millis(60),
                "round trip {rtt:?} with {delay:?} each way"
            );
        }
        // Changed while running: one way only.
        relay.set_delay(Direction::ToClient, Duration::ZERO);
        let rtt = round_trip(&c, relay.addr(), b"one way").await;
        assert!(
            rtt >= delay && rtt < delay + Duration::from_millis(60),
            "{rtt:?}"
        );
        // A burst comes out in the order it went in, and the queue does not hold up the
        // loop: all 100 arrive about one round trip after the first was sent.
        relay.set_delay(Direction::ToClient, delay);
        let start = StdInstant::now();
        for i in 0..100u8 {
            c.send_to(&[i], relay.addr()).await.unwrap();
        }
        for i in 0..100u8 {
            assert_eq!(recv(&c).await, [i]);
        }
        assert!(
            start.elapsed() < 2 * delay + Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        let stats = relay.stats();
        assert_eq!((stats.to_upstream, stats.to_client), (104, 104));
        assert_eq!(stats.flows, 1);
    }

    #[tokio::test]
    async fn drops_the_configured_share_and_counts_every_datagram() {
        let echo = Echo::start().await;
        let relay = Relay::start(
            echo.addr(),
            RelayOptions {
                drop_probability: 1.0,
                seed: Some(7),
                ..RelayOptions::default()
            },
        )
        .await
        .unwrap();
        let c = client().await;
        c.send_to(b"lost", relay.addr()).await.unwrap();
        expect_quiet(&c).await;
        assert_eq!(relay.stats().dropped_to_upstream, 1);
        assert!(echo.sources().is_empty());

        relay.set_drop_probability(0.3);
        let n = 500u64;
        let mut received = 0u64;
        for i in 0..n {
            c.send_to(&i.to_be_bytes(), relay.addr()).await.unwrap();
            if i % 25 == 24 {
                // In batches, so that no kernel buffer overflows and every loss is the relay's.
                until("the batch counted", || {
                    let s = relay.stats();
                    s.to_upstream + s.dropped_to_upstream == i + 2
                        && s.to_client + s.dropped_to_client == s.to_upstream
                })
                .await;
                let mut buf = [0u8; 64];
                while c.try_recv(&mut buf).is_ok() {
                    received += 1;
                }
            }
        }
        let s = relay.stats();
        let dropped_up = s.dropped_to_upstream - 1;
        assert!(
            (100..=200).contains(&dropped_up),
            "{dropped_up} of {n} dropped on the way up at p=0.3"
        );
        let echoed = echo.sources().len() as u64;
        assert_eq!(echoed, s.to_upstream);
        assert!(
            (echoed * 2 / 10..=echoed * 4 / 10).contains(&s.dropped_to_client),
            "{} of {echoed} dropped on the way back",
            s.dropped_to_client
        );
        assert_eq!(received, s.to_client);
    }

    #[tokio::test]
    async fn a_cut_drops_everything_both_ways_until_healed() {
        let echo = Echo::start().await;
        let relay = Relay::start(echo.addr(), RelayOptions::default())
            .await
            .unwrap();
        let c = client().await;
        round_trip(&c, relay.addr(), b"before").await;
        let flow = echo.sources()[0];

        relay.cut();
        assert!(relay.is_cut());
        c.send_to(b"up", relay.addr()).await.unwrap();
        echo.socket.send_to(b"down", flow).await.unwrap();
        expect_quiet(&c).await;
        assert_eq!(echo.sources().len(), 1, "nothing reached the echo");
        let s = relay.stats();
        assert_eq!((s.dropped_to_upstream, s.dropped_to_client), (1, 1));

        relay.heal();
        round_trip(&c, relay.addr(), b"after").await;
        echo.socket.send_to(b"down", flow).await.unwrap();
        assert_eq!(recv(&c).await, b"down");
        assert_eq!(echo.sources(), [flow, flow], "same flow after the cut");
    }

    #[tokio::test]
    async fn a_datagram_waiting_when_the_cut_starts_is_lost() {
        let echo = Echo::start().await;
        let relay = Relay::start(echo.addr(), RelayOptions::delay(Duration::from_millis(100)))
            .await
            .unwrap();
        let c = client().await;
        c.send_to(b"in flight", relay.addr()).await.unwrap();
        until("the datagram queued", || relay.stats().flows == 1).await;
        relay.cut();
        expect_quiet(&c).await;
        assert!(echo.sources().is_empty());
        assert_eq!(relay.stats().dropped_to_upstream, 1);
    }

    #[tokio::test]
    async fn rebind_moves_every_flow_to_a_new_port() {
        let echo = Echo::start().await;
        let relay = Relay::start(echo.addr(), RelayOptions::default())
            .await
            .unwrap();
        let (a, b) = (client().await, client().await);
        round_trip(&a, relay.addr(), b"a").await;
        round_trip(&b, relay.addr(), b"b").await;
        let before = echo.sources();
        assert_ne!(before[0], before[1], "one upstream socket per client");

        assert_eq!(relay.rebind().await.unwrap(), 2);
        round_trip(&a, relay.addr(), b"a").await;
        round_trip(&b, relay.addr(), b"b").await;
        let after = echo.sources();
        for (old, new) in before.iter().zip(&after[2..]) {
            assert_eq!(old.ip(), new.ip());
            assert_ne!(old.port(), new.port(), "the echo sees a new source port");
        }
        let mut flows: Vec<SocketAddr> = relay.flows().await.into_iter().map(|f| f.1).collect();
        let mut expected = after[2..].to_vec();
        flows.sort();
        expected.sort();
        assert_eq!(flows, expected);
        // What the upstream still sends to the old port is lost.
        echo.socket.send_to(b"stale", before[0]).await.unwrap();
        expect_quiet(&a).await;
        let s = relay.stats();
        assert_eq!((s.flows, s.rebinds), (2, 2));
    }

    #[tokio::test]
    async fn reordering_swaps_a_datagram_with_the_next_one() {
        let echo = Echo::start().await;
        let relay = Relay::start(echo.addr(), RelayOptions::default())
            .await
            .unwrap();
        let c = client().await;
        round_trip(&c, relay.addr(), &[0]).await;
        relay.set_reorder_probability(1.0);
        // Every datagram is held back and overtaken by the next one: 1 2 3 4 reach the echo
        // as 2 1 4 3, whose echoes are swapped again on the way back.
        for i in 1..=4u8 {
            c.send_to(&[i], relay.addr()).await.unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(recv(&c).await[0]);
        }
        let at_echo: Vec<u8> = echo.payloads().iter().map(|p| p[0]).collect();
        assert_eq!(at_echo, [0, 2, 1, 4, 3]);
        assert_eq!(got, [1, 2, 3, 4], "swapped twice is in order again");
        // A datagram that nothing follows is held back only briefly.
        let rtt = round_trip(&c, relay.addr(), b"alone").await;
        assert!(
            rtt < 2 * REORDER_HOLD + Duration::from_millis(100),
            "{rtt:?}"
        );
    }

    #[tokio::test]
    async fn stopping_closes_every_socket() {
        let echo = Echo::start().await;
        let relay = Relay::start(echo.addr(), RelayOptions::default())
            .await
            .unwrap();
        let c = client().await;
        round_trip(&c, relay.addr(), b"x").await;
        relay.rebind().await.unwrap();
        round_trip(&c, relay.addr(), b"x").await;
        let mut ports = vec![relay.addr()];
        ports.extend(echo.sources());
        relay.shutdown().await;
        for addr in &ports {
            std::net::UdpSocket::bind(addr)
                .unwrap_or_else(|e| panic!("{addr} still in use after shutdown: {e}"));
        }

        // Dropped instead: closed a moment later.
        let relay = Relay::start(echo.addr(), RelayOptions::default())
            .await
            .unwrap();
        round_trip(&c, relay.addr(), b"x").await;
        let addr = relay.addr();
        let flow = *echo.sources().last().unwrap();
        drop(relay);
        until("the sockets closed", || {
            std::net::UdpSocket::bind(addr).is_ok() && std::net::UdpSocket::bind(flow).is_ok()
        })
        .await;
    }
}
