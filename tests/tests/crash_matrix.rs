//! The crash matrix (issue #12, "Proving it"): `kill -9` the broker at a random moment while
//! several clients send messages, change group state (invites and removals, admin roles,
//! mutes, the announcement, member attributes, new groups) and upload shared files, then
//! restart it on the same data dir and check what it kept against what each client was told:
//!
//! - every acknowledged operation is there: a message in the history at the sequence number
//!   its sender was given, with its id and payload; the member, role, mute, announcement and
//!   attribute state its request set (unless a later request of the same writer, whose
//!   outcome is unknown, may have replaced it); a file in the list with the same size and
//!   hash, and the same bytes when downloaded; a created group among its owner's groups;
//! - nothing of a request answered with an error (the traffic includes requests that must be
//!   refused: an outsider's messages and uploads, a member changing what only admins may,
//!   an invalid attribute key, an invite of a user who never logged in, a muted member's
//!   messages); such a request that was accepted is reported too;
//! - an operation whose answer never came (the broker died first; or "500, outcome unknown")
//!   may or may not be there: counted as unknown, and what is there decides the state
//!   carried into the next round;
//! - the history stays unique and gap-free, and no message of an earlier round changes.
//!
//! One broker and one data dir for all rounds, so each round also re-checks everything the
//! earlier rounds left. Timing is real (the broker is a separate process), so a seed
//! reproduces the choices (kill moment, operations, sizes) but not the interleaving.
//!
//! `CRASH_ROUNDS` (default 5) sets the number of rounds and `CRASH_SEED` the seed (printed at
//! the start and in every failure). benches/crash-matrix.sh runs hundreds of rounds against
//! the release broker (`CONVOKE_BIN`) and writes the counts to benches/RESULTS.md.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use convoke_client::{Client, ClientError, ReconnectPolicy, UploadSource};
use convoke_protocol::{CreateGroupData, ErrorCode};
use convoke_tests::{pattern_bytes, Broker};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Groups under traffic.
const GROUPS: usize = 2;
/// Plain members of every group: m2's admin role and m3's mute are toggled, m0 and m1 set
/// attributes, m1 uploads files.
const MEMBERS: [&str; 4] = ["m0", "m1", "m2", "m3"];
/// Every user a round connects (the owner, the members, an outsider).
const USERS: [&str; 6] = ["own", "m0", "m1", "m2", "m3", "out"];
/// Messages one sender has in flight at once (pipelined).
const PIPELINE: usize = 4;
/// A full re-read of every group's history every this many rounds (and after the last);
/// the rounds between re-read the last 100 messages before what is new.
const FULL_CHECK_EVERY: usize = 10;

fn invitee(g: usize) -> String {
    format!("inv{g}")
}

// ---------------------------------------------------------------------------------------
// What the clients were told.

/// What a request's answer says about its effect.
#[derive(Debug, Clone)]
enum Outcome<T> {
    /// Answered with success: the effect must be there.
    Acked(T),
    /// Answered with an error: the effect must not be there.
    Refused(String),
    /// No answer (the broker died first) or "500, outcome unknown": either.
    Unknown(String),
}

impl<T> Outcome<T> {
    fn of(r: Result<T, ClientError>) -> Self {
        match r {
            Ok(v) => Self::Acked(v),
            Err(ClientError::Api(e)) if e.code != ErrorCode::ServerBusy => {
                Self::Refused(e.to_string())
            }
            Err(e) => Self::Unknown(e.to_string()),
        }
    }

    /// The connection is gone: the worker stops.
    fn ends_worker(&self) -> bool {
        matches!(self, Self::Unknown(why) if !why.starts_with("error 500"))
    }
}

/// A piece of state one writer changes with a sequence of requests, one at a time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Announcement(usize),
    Muted(usize, String),
    Admin(usize, String),
    Member(usize, String),
    Attr(usize, String, String),
}

impl Key {
    /// The state before anyone changed it.
    fn initial(&self) -> String {
        match self {
            Key::Member(_, u) if MEMBERS.contains(&u.as_str()) => "true".into(),
            Key::Muted(..) | Key::Admin(..) | Key::Member(..) => "false".into(),
            Key::Announcement(_) | Key::Attr(..) => String::new(),
        }
    }
}

/// One request that set `key` to `value`.
#[derive(Debug, Clone)]
struct Write {
    value: String,
    outcome: Outcome<()>,
    /// The request must be refused (a permission or validation failure).
    must_fail: bool,
}

#[derive(Debug, Clone)]
struct SentMessage {
    group: usize,
    from: String,
    payload: String,
    outcome: Outcome<(u64, String)>,
    must_fail: bool,
}

#[derive(Debug, Clone)]
struct SentFile {
    group: usize,
    name: String,
    len: usize,
    seed: u32,
    sha256: String,
    outcome: Outcome<String>,
    must_fail: bool,
}

#[derive(Debug, Default)]
struct Journal {
    writes: BTreeMap<Key, Vec<Write>>,
    messages: Vec<SentMessage>,
    files: Vec<SentFile>,
    created: Vec<(String, Outcome<String>)>,
}

type Shared = Arc<Mutex<Journal>>;

fn journal(j: &Shared) -> std::sync::MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------
// What the broker is known to hold, carried from round to round.

#[derive(Debug, Default)]
struct Model {
    gids: Vec<String>,
    state: BTreeMap<Key, String>,
    /// Per group: seq -> payload of every message seen in the history.
    history: Vec<BTreeMap<u64, String>>,
    /// Payloads ever seen in a history (each at most once).
    payloads: BTreeSet<String>,
    /// Per group: file name -> sha256.
    files: Vec<BTreeMap<String, String>>,
    created: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Stats {
    rounds: usize,
    acked: u64,
    refused: u64,
    unknown: u64,
    unknown_present: u64,
    messages_acked: u64,
    files_acked: u64,
    state_checks: u64,
}

impl Stats {
    fn count<T>(&mut self, o: &Outcome<T>) {
        match o {
            Outcome::Acked(_) => self.acked += 1,
            Outcome::Refused(_) => self.refused += 1,
            Outcome::Unknown(_) => self.unknown += 1,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The traffic of one round.

async fn connect(broker: &Broker, user: &str) -> Client {
    broker
        .builder()
        .token(broker.token(user, false, 3600))
        .device_id("crash")
        .reconnect(ReconnectPolicy::disabled())
        .request_timeout(Duration::from_secs(10))
        .ignore_events()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{user} cannot connect: {e}\nbroker log:\n{}", broker.log()))
}

fn rng_for(seed: u64, round: usize, worker: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ ((round as u64) << 32) ^ worker.wrapping_mul(0x9E37_79B9))
}

async fn jitter(rng: &mut StdRng) {
    let ms = rng.random_range(0..6u64);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Messages from `client` to random groups, `PIPELINE` in flight, until the connection dies.
async fn sender(client: Client, gids: Vec<String>, j: Shared, mut rng: StdRng, round: usize) {
    let from = client.user_id().to_string();
    let slots = Arc::new(tokio::sync::Semaphore::new(PIPELINE));
    let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for n in 0.. {
        if dead.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let permit = slots.clone().acquire_owned().await.unwrap();
        let group = rng.random_range(0..gids.len());
        let payload = format!("r{round}:{from}:{n}");
        let (client, gid, j, dead, from) = (
            client.clone(),
            gids[group].clone(),
            j.clone(),
            dead.clone(),
            from.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = client
                .send_group_message(&gid, payload.as_bytes().to_vec(), false)
                .await
                .map(|s| (s.seq, s.msg_id));
            let outcome = Outcome::of(r);
            if outcome.ends_worker() {
                dead.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            journal(&j).messages.push(SentMessage {
                group,
                from,
                payload,
                outcome,
                must_fail: false,
            });
            drop(permit);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Records one write; true if the worker should go on.
fn record(j: &Shared, key: Key, value: String, outcome: Outcome<()>, must_fail: bool) -> bool {
    let go_on = !outcome.ends_worker();
    journal(j).writes.entry(key).or_default().push(Write {
        value,
        outcome,
        must_fail,
    });
    go_on
}

/// The owner's management traffic on group `g`: announcement, m3's mute, m2's admin role,
/// the invitee's membership, each toggled or replaced in random order, one at a time.
async fn manager(owner: Client, g: usize, gid: String, j: Shared, mut rng: StdRng, round: usize) {
    let (mut muted, mut admin, mut member) = (None::<bool>, None::<bool>, None::<bool>);
    let inv = invitee(g);
    for n in 0.. {
        jitter(&mut rng).await;
        let go_on = match rng.random_range(0..4) {
            0 => {
                let v = format!("a:{round}:{g}:{n}");
                let r = owner.update_group_announcement(&gid, &v).await;
                record(&j, Key::Announcement(g), v, Outcome::of(r), false)
            }
            1 => {
                let to = !muted.unwrap_or(rng.random_bool(0.5));
                let r = if to {
                    owner.mute_group_member(&gid, &["m3"], -1).await.map(drop)
                } else {
                    owner.unmute_group_member(&gid, &["m3"]).await
                };
                muted = Some(to);
                let key = Key::Muted(g, "m3".into());
                record(&j, key, to.to_string(), Outcome::of(r), false)
            }
            2 => {
                let to = !admin.unwrap_or(rng.random_bool(0.5));
                let r = if to {
                    owner.set_group_admin(&gid, "m2").await
                } else {
                    owner.remove_group_admin(&gid, "m2").await
                };
                admin = Some(to);
                let key = Key::Admin(g, "m2".into());
                record(&j, key, to.to_string(), Outcome::of(r), false)
            }
            _ => {
                let to = !member.unwrap_or(rng.random_bool(0.5));
                let r = if to {
                    owner.invite_users_to_group(&gid, &[&inv]).await.map(drop)
                } else {
                    owner.remove_group_member(&gid, &inv).await
                };
                member = Some(to);
                let key = Key::Member(g, inv.clone());
                record(&j, key, to.to_string(), Outcome::of(r), false)
            }
        };
        if !go_on {
            break;
        }
    }
}

/// `client` sets its own attribute `n` in random groups.
async fn attributes(client: Client, gids: Vec<String>, j: Shared, mut rng: StdRng, round: usize) {
    let me = client.user_id().to_string();
    for n in 0.. {
        jitter(&mut rng).await;
        let g = rng.random_range(0..gids.len());
        let v = format!("v:{round}:{n}");
        let attrs = BTreeMap::from([("n".to_string(), v.clone())]);
        let r = client
            .set_group_member_attributes(&gids[g], &me, attrs)
            .await;
        if !record(
            &j,
            Key::Attr(g, me.clone(), "n".into()),
            v,
            Outcome::of(r),
            false,
        ) {
            break;
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A file to upload: where, its name and its content (`pattern_bytes(len, seed)`).
struct FileSpec {
    group: usize,
    name: String,
    len: usize,
    seed: u32,
    must_fail: bool,
}

/// One upload, recorded; true if the worker should go on.
async fn upload(client: &Client, gid: &str, f: FileSpec, j: &Shared) -> bool {
    let bytes = pattern_bytes(f.len, f.seed);
    let sha256 = sha256_hex(&bytes);
    let r = client
        .upload_group_shared_file(gid, UploadSource::bytes(bytes, f.name.clone()), None)
        .await
        .map(|f| f.file_id);
    let outcome = Outcome::of(r);
    let go_on = !outcome.ends_worker();
    journal(j).files.push(SentFile {
        group: f.group,
        name: f.name,
        len: f.len,
        seed: f.seed,
        sha256,
        outcome,
        must_fail: f.must_fail,
    });
    go_on
}

/// m1 uploads files of random sizes (1 byte to 256 KiB) to random groups, one at a time.
async fn uploader(client: Client, gids: Vec<String>, j: Shared, mut rng: StdRng, round: usize) {
    for n in 0u32.. {
        let g = rng.random_range(0..gids.len());
        let len = rng.random_range(1..=256 * 1024);
        let seed = rng.random();
        let file = FileSpec {
            group: g,
            name: format!("f-{round}-{n}.bin"),
            len,
            seed,
            must_fail: false,
        };
        if !upload(&client, &gids[g], file, &j).await {
            break;
        }
    }
}

/// The owner creates groups, one at a time.
async fn creator(owner: Client, j: Shared, mut rng: StdRng, round: usize) {
    for n in 0.. {
        jitter(&mut rng).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let name = format!("c-{round}-{n}");
        let r = owner
            .create_group(CreateGroupData {
                groupname: name.clone(),
                ..CreateGroupData::default()
            })
            .await;
        let outcome = Outcome::of(r);
        let go_on = !outcome.ends_worker();
        journal(&j).created.push((name, outcome));
        if !go_on {
            break;
        }
    }
}

/// Requests that must be refused, from a plain member (m0), the outsider and the owner.
async fn refused(
    m0: Client,
    out: Client,
    owner: Client,
    gids: Vec<String>,
    j: Shared,
    mut rng: StdRng,
    round: usize,
) {
    for n in 0.. {
        jitter(&mut rng).await;
        let g = rng.random_range(0..gids.len());
        let gid = &gids[g];
        let go_on = match rng.random_range(0..7) {
            0 => {
                let payload = format!("bad:{round}:out:{n}");
                let r = out
                    .send_group_message(gid, payload.as_bytes().to_vec(), false)
                    .await
                    .map(|s| (s.seq, s.msg_id));
                let outcome = Outcome::of(r);
                let go_on = !outcome.ends_worker();
                journal(&j).messages.push(SentMessage {
                    group: g,
                    from: "out".into(),
                    payload,
                    outcome,
                    must_fail: true,
                });
                go_on
            }
            1 => {
                let v = format!("bad:{round}:{n}");
                let r = m0.update_group_announcement(gid, &v).await;
                record(&j, Key::Announcement(g), v, Outcome::of(r), true)
            }
            2 => {
                let r = m0.mute_group_member(gid, &["m1"], -1).await.map(drop);
                record(
                    &j,
                    Key::Muted(g, "m1".into()),
                    "true".into(),
                    Outcome::of(r),
                    true,
                )
            }
            3 => {
                let v = format!("bad:{round}:{n}");
                let attrs = BTreeMap::from([("bad".to_string(), v.clone())]);
                let r = m0.set_group_member_attributes(gid, "m1", attrs).await;
                record(
                    &j,
                    Key::Attr(g, "m1".into(), "bad".into()),
                    v,
                    Outcome::of(r),
                    true,
                )
            }
            4 => {
                let v = format!("bad:{round}:{n}");
                let attrs = BTreeMap::from([("bad key!".to_string(), v.clone())]);
                let r = m0.set_group_member_attributes(gid, "m0", attrs).await;
                record(
                    &j,
                    Key::Attr(g, "m0".into(), "bad key!".into()),
                    v,
                    Outcome::of(r),
                    true,
                )
            }
            5 => {
                let file = FileSpec {
                    group: g,
                    name: format!("bad-{round}-{n}.bin"),
                    len: 1000,
                    seed: n,
                    must_fail: true,
                };
                upload(&out, gid, file, &j).await
            }
            _ => {
                let ghost = format!("ghost{round}x{n}");
                let r = owner.invite_users_to_group(gid, &[&ghost]).await.map(drop);
                record(
                    &j,
                    Key::Member(g, ghost),
                    "true".into(),
                    Outcome::of(r),
                    true,
                )
            }
        };
        if !go_on {
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The checks.

/// Every message of `gid` with a sequence number above `after`, in order.
async fn history_after(c: &Client, gid: &str, after: u64) -> Vec<convoke_protocol::GroupMessage> {
    let mut out: Vec<convoke_protocol::GroupMessage> = Vec::new();
    let mut from = after;
    loop {
        let page = c
            .get_group_messages(gid, None, Some(from), 100)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        from = last.seq;
        out.extend(page);
    }
    out
}

async fn all_files(c: &Client, gid: &str) -> Vec<convoke_protocol::SharedFile> {
    let mut out = Vec::new();
    for page in 1.. {
        let files = c.get_group_shared_filelist(gid, page, 10).await.unwrap();
        let n = files.len();
        out.extend(files);
        if n < 10 {
            break;
        }
    }
    out
}

async fn download(c: &Client, gid: &str, file_id: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    c.download_group_shared_file(gid, file_id, None, path.as_path(), None)
        .await
        .unwrap();
    std::fs::read(path).unwrap()
}

/// What the broker holds for the keys this test writes.
async fn read_state(c: &Client, model: &Model, keys: &BTreeSet<Key>) -> BTreeMap<Key, String> {
    let mut out = BTreeMap::new();
    for (g, gid) in model.gids.iter().enumerate() {
        let announcement = c.fetch_group_announcement(gid).await.unwrap();
        let muted: BTreeSet<String> = c
            .get_group_mutelist(gid)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.user)
            .collect();
        let admins: BTreeSet<String> = c.get_group_admin(gid).await.unwrap().into_iter().collect();
        let members: BTreeSet<String> = c
            .list_group_members(gid, 1, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.user_id)
            .collect();
        let mut attrs = BTreeMap::new();
        for k in keys {
            let v = match k {
                Key::Announcement(x) if *x == g => announcement.clone(),
                Key::Muted(x, u) if *x == g => muted.contains(u).to_string(),
                Key::Admin(x, u) if *x == g => admins.contains(u).to_string(),
                Key::Member(x, u) if *x == g => members.contains(u).to_string(),
                Key::Attr(x, u, name) if *x == g => {
                    if !attrs.contains_key(u) {
                        let a = c.get_group_member_attributes(gid, u).await.unwrap();
                        attrs.insert(u.clone(), a);
                    }
                    attrs[u].get(name).cloned().unwrap_or_default()
                }
                _ => continue,
            };
            out.insert(k.clone(), v);
        }
    }
    out
}

/// Checks the broker's state after a crash against the journal of the round; updates the
/// model to what is there. Returns the violations.
async fn verify(
    broker: &Broker,
    model: &mut Model,
    j: &Journal,
    full: bool,
    stats: &mut Stats,
) -> Vec<String> {
    let mut bad = Vec::new();
    let c = connect(broker, "own").await;

    // State: every key ever written, and the ones written now.
    let keys: BTreeSet<Key> = model.state.keys().chain(j.writes.keys()).cloned().collect();
    let actual = read_state(&c, model, &keys).await;
    for key in &keys {
        let known = model
            .state
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.initial());
        let writes = j.writes.get(key).map(Vec::as_slice).unwrap_or_default();
        let mut allowed = BTreeSet::from([known.clone()]);
        for w in writes {
            stats.count(&w.outcome);
            match (&w.outcome, w.must_fail) {
                (Outcome::Acked(()), true) => bad.push(format!(
                    "{key:?} = {:?}: a request that must be refused was accepted",
                    w.value
                )),
                (Outcome::Acked(()), false) => allowed = BTreeSet::from([w.value.clone()]),
                (Outcome::Unknown(_), false) => {
                    allowed.insert(w.value.clone());
                }
                _ => {}
            }
        }
        let got = actual.get(key).cloned().unwrap_or_default();
        stats.state_checks += 1;
        if !allowed.contains(&got) {
            let refused: Vec<&String> = writes
                .iter()
                .filter(|w| matches!(w.outcome, Outcome::Refused(_)))
                .map(|w| &w.value)
                .collect();
            bad.push(format!(
                "{key:?}: the broker holds {got:?}, allowed {allowed:?} (known before the round {known:?}; this round's last writes: {:?}; refused values among them: {refused:?})",
                writes[writes.len().saturating_sub(8)..].iter().map(|w| (&w.value, outcome_name(&w.outcome))).collect::<Vec<_>>()
            ));
        }
        let unknown_applied = writes.iter().any(|w| {
            matches!(w.outcome, Outcome::Unknown(_)) && w.value == got && w.value != known
        });
        if unknown_applied {
            stats.unknown_present += 1;
        }
        model.state.insert(key.clone(), got);
    }

    // Messages.
    for (g, gid) in model.gids.iter().enumerate() {
        let max_known = model.history[g].keys().next_back().copied().unwrap_or(0);
        let after = if full {
            0
        } else {
            max_known.saturating_sub(100)
        };
        let read = history_after(&c, gid, after).await;
        let mut expect_seq = after + 1;
        for m in &read {
            if m.seq != expect_seq {
                bad.push(format!(
                    "group {g}: history jumps from seq {} to {} (a gap or a repeat)",
                    expect_seq - 1,
                    m.seq
                ));
            }
            expect_seq = m.seq + 1;
        }
        let by_seq: BTreeMap<u64, &convoke_protocol::GroupMessage> =
            read.iter().map(|m| (m.seq, m)).collect();
        // Earlier rounds' messages are unchanged.
        for (seq, payload) in model.history[g].range(after + 1..) {
            match by_seq.get(seq) {
                Some(m) if m.payload == payload.as_bytes() => {}
                Some(m) => bad.push(format!(
                    "group {g}: seq {seq} held {payload:?} and now holds {:?} (overwritten)",
                    String::from_utf8_lossy(&m.payload)
                )),
                None => bad.push(format!("group {g}: seq {seq} ({payload:?}) is gone")),
            }
        }
        // This round's.
        let sent: BTreeMap<&str, &SentMessage> = j
            .messages
            .iter()
            .filter(|m| m.group == g)
            .map(|m| (m.payload.as_str(), m))
            .collect();
        let mut seen_now = BTreeSet::new();
        for m in read.iter().filter(|m| m.seq > max_known) {
            let payload = String::from_utf8_lossy(&m.payload).into_owned();
            if !seen_now.insert(payload.clone()) || model.payloads.contains(&payload) {
                bad.push(format!(
                    "group {g}: {payload:?} is in the history twice (seq {})",
                    m.seq
                ));
            }
            match sent.get(payload.as_str()) {
                None => bad.push(format!(
                    "group {g}: seq {} holds {payload:?}, which was not sent in this round",
                    m.seq
                )),
                Some(s) => match &s.outcome {
                    Outcome::Refused(e) => bad.push(format!(
                        "group {g}: seq {} holds {payload:?}, whose send was refused ({e})",
                        m.seq
                    )),
                    Outcome::Acked((seq, id)) if *seq != m.seq || *id != m.msg_id || m.from != s.from => bad.push(format!(
                        "group {g}: {payload:?} was acknowledged as seq {seq} id {id} from {}, the history has seq {} id {} from {}",
                        s.from, m.seq, m.msg_id, m.from
                    )),
                    Outcome::Unknown(_) => stats.unknown_present += 1,
                    Outcome::Acked(_) => {}
                },
            }
            model.history[g].insert(m.seq, payload);
        }
        for s in j.messages.iter().filter(|m| m.group == g) {
            stats.count(&s.outcome);
            if s.must_fail && matches!(s.outcome, Outcome::Acked(_)) {
                bad.push(format!(
                    "group {g}: {:?} from {} must be refused and was accepted",
                    s.payload, s.from
                ));
            }
            if let Outcome::Acked((seq, _)) = &s.outcome {
                stats.messages_acked += 1;
                if !seen_now.contains(&s.payload) {
                    let there = by_seq
                        .get(seq)
                        .map(|m| String::from_utf8_lossy(&m.payload).into_owned());
                    bad.push(format!(
                        "group {g}: LOST acknowledged message {:?} from {} (seq {seq}); the history has {there:?} at that seq",
                        s.payload, s.from
                    ));
                }
            }
        }
        model.payloads.extend(seen_now);
    }

    // Files.
    for (g, gid) in model.gids.iter().enumerate() {
        let listed = all_files(&c, gid).await;
        let by_name: BTreeMap<&str, &convoke_protocol::SharedFile> =
            listed.iter().map(|f| (f.file_name.as_str(), f)).collect();
        if by_name.len() != listed.len() {
            bad.push(format!("group {g}: a file name is listed twice"));
        }
        for (name, sha) in &model.files[g] {
            match by_name.get(name.as_str()) {
                Some(f) if &f.sha256 == sha => {}
                Some(f) => bad.push(format!(
                    "group {g}: file {name} changed: sha256 {} was {sha}",
                    f.sha256
                )),
                None => bad.push(format!("group {g}: file {name} is gone")),
            }
        }
        let sent: BTreeMap<&str, &SentFile> = j
            .files
            .iter()
            .filter(|f| f.group == g)
            .map(|f| (f.name.as_str(), f))
            .collect();
        for f in &listed {
            if model.files[g].contains_key(&f.file_name) {
                continue;
            }
            let Some(s) = sent.get(f.file_name.as_str()) else {
                bad.push(format!(
                    "group {g}: file {} is listed but was never uploaded",
                    f.file_name
                ));
                continue;
            };
            match &s.outcome {
                Outcome::Refused(e) => {
                    bad.push(format!(
                        "group {g}: file {} is listed, its upload was refused ({e})",
                        s.name
                    ));
                    continue;
                }
                Outcome::Unknown(_) => stats.unknown_present += 1,
                Outcome::Acked(_) => {}
            }
            if f.file_size != s.len as u64 || f.sha256 != s.sha256 {
                bad.push(format!(
                    "group {g}: file {} is listed with {} bytes sha256 {}, uploaded {} bytes sha256 {}",
                    s.name, f.file_size, f.sha256, s.len, s.sha256
                ));
                continue;
            }
            let bytes = download(&c, gid, &f.file_id).await;
            if bytes != pattern_bytes(s.len, s.seed) {
                bad.push(format!(
                    "group {g}: file {} downloads different bytes ({} of {})",
                    s.name,
                    bytes.len(),
                    s.len
                ));
            }
            model.files[g].insert(f.file_name.clone(), f.sha256.clone());
        }
        for s in sent.values() {
            stats.count(&s.outcome);
            if s.must_fail && matches!(s.outcome, Outcome::Acked(_)) {
                bad.push(format!(
                    "group {g}: upload {} must be refused and was accepted",
                    s.name
                ));
            }
            if let Outcome::Acked(id) = &s.outcome {
                stats.files_acked += 1;
                if !by_name.contains_key(s.name.as_str()) {
                    bad.push(format!(
                        "group {g}: LOST acknowledged file {} (id {id}, {} bytes)",
                        s.name, s.len
                    ));
                }
            }
        }
    }

    // Created groups.
    let mut joined = BTreeSet::new();
    for page in 1.. {
        let groups = c.get_joined_groups(page, 500, false, false).await.unwrap();
        let n = groups.len();
        joined.extend(groups.into_iter().map(|g| g.group_name));
        if n < 500 {
            break;
        }
    }
    for name in &model.created {
        if !joined.contains(name) {
            bad.push(format!("created group {name} is gone"));
        }
    }
    for (name, outcome) in &j.created {
        stats.count(outcome);
        match outcome {
            Outcome::Acked(gid) if !joined.contains(name) => {
                bad.push(format!("LOST acknowledged group {name} (id {gid})"));
            }
            Outcome::Refused(e) if joined.contains(name) => {
                bad.push(format!(
                    "group {name} exists, its creation was refused ({e})"
                ));
            }
            Outcome::Unknown(_) if joined.contains(name) => stats.unknown_present += 1,
            _ => {}
        }
        if joined.contains(name) {
            model.created.insert(name.clone());
        }
    }
    c.close().await;
    bad
}

fn outcome_name<T>(o: &Outcome<T>) -> &'static str {
    match o {
        Outcome::Acked(_) => "acked",
        Outcome::Refused(_) => "refused",
        Outcome::Unknown(_) => "unknown",
    }
}

// ---------------------------------------------------------------------------------------
// Rounds.

async fn setup(broker: &Broker, model: &mut Model) {
    for u in USERS.iter().copied().chain(
        (0..GROUPS)
            .map(invitee)
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    ) {
        connect(broker, u).await.close().await;
    }
    let own = connect(broker, "own").await;
    for g in 0..GROUPS {
        let gid = own
            .create_group(CreateGroupData {
                groupname: format!("crash {g}"),
                members: MEMBERS.iter().map(|m| m.to_string()).collect(),
                invite_need_confirm: false,
                ..CreateGroupData::default()
            })
            .await
            .unwrap();
        model.gids.push(gid);
        model.history.push(BTreeMap::new());
        model.files.push(BTreeMap::new());
    }
    own.close().await;
}

/// One round: traffic, `kill -9` after a random delay, restart, check.
async fn round(
    broker: &mut Broker,
    model: &mut Model,
    seed: u64,
    r: usize,
    stats: &mut Stats,
) -> Vec<String> {
    let mut rng = rng_for(seed, r, 0);
    let mut clients = BTreeMap::new();
    for u in USERS {
        clients.insert(u, connect(broker, u).await);
    }
    let j: Shared = Arc::default();
    let gids = model.gids.clone();
    let mut tasks = Vec::new();
    for (w, u) in ["own", "m0", "m1", "m2", "m3"].into_iter().enumerate() {
        let rng = rng_for(seed, r, 10 + w as u64);
        tasks.push(tokio::spawn(sender(
            clients[u].clone(),
            gids.clone(),
            j.clone(),
            rng,
            r,
        )));
    }
    for (g, gid) in gids.iter().enumerate() {
        let rng = rng_for(seed, r, 20 + g as u64);
        tasks.push(tokio::spawn(manager(
            clients["own"].clone(),
            g,
            gid.clone(),
            j.clone(),
            rng,
            r,
        )));
    }
    for (w, u) in ["m0", "m1"].into_iter().enumerate() {
        let rng = rng_for(seed, r, 30 + w as u64);
        tasks.push(tokio::spawn(attributes(
            clients[u].clone(),
            gids.clone(),
            j.clone(),
            rng,
            r,
        )));
    }
    tasks.push(tokio::spawn(uploader(
        clients["m1"].clone(),
        gids.clone(),
        j.clone(),
        rng_for(seed, r, 40),
        r,
    )));
    tasks.push(tokio::spawn(creator(
        clients["own"].clone(),
        j.clone(),
        rng_for(seed, r, 41),
        r,
    )));
    tasks.push(tokio::spawn(refused(
        clients["m0"].clone(),
        clients["out"].clone(),
        clients["own"].clone(),
        gids.clone(),
        j.clone(),
        rng_for(seed, r, 42),
        r,
    )));

    let kill_after = Duration::from_millis(rng.random_range(30..1500));
    tokio::time::sleep(kill_after).await;
    broker.kill9();
    // The broker is gone without a word; closing the clients ends what is in flight at once
    // (as unknown) instead of at the request timeout.
    for c in clients.values() {
        c.close().await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for t in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, t)
            .await
            .expect("a worker did not end within 30 s of the kill")
            .unwrap();
    }
    let t_restart = Instant::now();
    broker.launch();
    let restart = t_restart.elapsed();
    let j = std::mem::take(&mut *journal(&j));
    let full = (r + 1) % FULL_CHECK_EVERY == 0;
    let t_verify = Instant::now();
    let bad = verify(broker, model, &j, full, stats).await;
    let checked = t_verify.elapsed();
    stats.rounds += 1;
    eprintln!(
        "round {r}: killed after {kill_after:?}, restarted in {restart:.1?}, checked in {checked:.1?}; {} messages, {} writes, {} uploads, {} creates; totals: acked {}, refused {}, unknown {} ({} found applied)",
        j.messages.len(),
        j.writes.values().map(Vec::len).sum::<usize>(),
        j.files.len(),
        j.created.len(),
        stats.acked,
        stats.refused,
        stats.unknown,
        stats.unknown_present
    );
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_operations_survive_kill_9_at_random_moments() {
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!(
        "crash matrix: seed {seed} (CRASH_SEED={seed} to replay the choices), {rounds} rounds"
    );
    let started = Instant::now();
    // Every message stays in the history, and no per-user rate or file quota turns a long
    // run's traffic into refusals: the matrix is about what is acknowledged.
    let mut broker = Broker::start_with(&[
        ("messages.history_per_group", "1000000"),
        ("quotas.requests_per_sec", "0"),
        ("quotas.messages_per_sec", "0"),
        ("quotas.file_mb_per_user", "0"),
    ])
    .await;
    let mut model = Model::default();
    setup(&broker, &mut model).await;
    let mut stats = Stats::default();
    for r in 0..rounds {
        let last = r + 1 == rounds;
        let mut bad = round(&mut broker, &mut model, seed, r, &mut stats).await;
        if last && (r + 1) % FULL_CHECK_EVERY != 0 {
            // A last full re-read of every history.
            bad.extend(
                verify(
                    &broker,
                    &mut model,
                    &Journal::default(),
                    true,
                    &mut Stats::default(),
                )
                .await,
            );
        }
        assert!(
            bad.is_empty(),
            "crash matrix seed {seed} (CRASH_SEED={seed}), round {r}: {} violation(s):\n- {}\nbroker log (last 30 lines):\n{}",
            bad.len(),
            bad.join("\n- "),
            tail(&broker.log(), 30)
        );
    }
    let messages: usize = model.history.iter().map(BTreeMap::len).sum();
    let files: usize = model.files.iter().map(BTreeMap::len).sum();
    println!(
        "CRASH-MATRIX-SUMMARY seed={seed} rounds={} ops={} acked={} refused={} unknown={} unknown_applied={} messages_acked={} files_acked={} state_checks={} history_messages={messages} files={files} groups_created={} secs={:.0}",
        stats.rounds,
        stats.acked + stats.refused + stats.unknown,
        stats.acked,
        stats.refused,
        stats.unknown,
        stats.unknown_present,
        stats.messages_acked,
        stats.files_acked,
        stats.state_checks,
        model.created.len(),
        started.elapsed().as_secs_f64()
    );
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
