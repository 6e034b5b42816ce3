//! The sequencer: the one task between the broker's pushes (from whichever link is up) and
//! the application's [`crate::EventStream`]. It makes the stream gap-free and
//! duplicate-free across reconnects.
//!
//! - **Messages**: it remembers, per group, the last sequence number it handed on. A live
//!   message at or below it is a duplicate and dropped (so is one at or below the highest
//!   seq ever handed on for the group, whatever its tracking since); one further ahead than the next
//!   means messages were missed (a slow-consumer cut, a push lost to a dying session): they
//!   are fetched from the group's history (`getGroupMessages`) and handed on first. After a
//!   reconnect, every group it tracks is caught up the same way before any push of the new
//!   link, then `Resumed` is announced. History is fetched in pages of 100: the newest seq
//!   and the first page in one round trip, then the remaining pages pipelined
//!   ([`PAGES_IN_FLIGHT`] at a time). A long catch-up is bound by the new connection's
//!   congestion window more than by round trips (benches/RESULTS.md, "Resume": 10,000
//!   messages in ~0.64 s at 50 ms RTT, ~13 round trips). This client's own sends are not handed back: the send path
//!   records their seqs ([`SendTrack`]) and the sequencer skips them, waiting for sends still
//!   in flight to a group before it decides that a seq is missing.
//!   A message whose gap cannot be filled on a live link (after [`FILL_ATTEMPTS`] tries) is
//!   held back and tried again later ([`RETRY_FIRST`], doubling up to [`RETRY_MAX`]), so it
//!   is not lost on a group that then goes quiet.
//! - **Kept events** (`Push::Kept`): handed on once per client, whatever link they come
//!   on; a copy that comes again on a later link (the broker did not get the
//!   acknowledgement before the old link dropped) is acknowledged again, not handed on.
//!
//! A group is tracked from the first message the client hands on, from its creation by this
//! user (from seq 0), or from [`crate::Client::track_group`] (a resume point the
//! application kept, e.g. across restarts). Every other group the user is in is caught up
//! by time: at each connection the client lists the joined groups (getJoinedGroups), and a
//! resume fetches the messages of those it has no position in that are stamped since it
//! learnt of them (the first welcome's time; after a reconnect, the newest broker time it
//! had seen, so a group joined while away may bring a few messages from just before the
//! join; a group it hears of by an event, from that event's time). Messages older than the
//! group's retained history cannot be recovered.
//!
//! A group stops being tracked when it stops being the user's: a removal or block naming
//! the user (`removeMember`), `destroy`, the user's leave on another device
//! (`memberAbsence` naming the user), or this client's own successful `leave_group`,
//! `destroy_group` or `block_group_messages` ([`membership`]). Messages still coming for it
//! (sent before) are handed on untracked. After a rejoin (an event naming the user, or this
//! client's own `join_group`, `accept_group_invite` or `unblock_group_messages`) it is
//! tracked from its first message from then on, so the time away is not "filled"; a
//! position at a message stamped since the join is kept. Events the client hears only from
//! the login's replay of kept events are handled after the catch-up (the broker does not
//! mark the replay's end): a removal and re-add that both happened while the client was
//! away are learnt only after the catch-up has handed on what was posted in between. Before
//! a reconnect's catch-up, getGroupInfo (100 groups a request) says which groups the user
//! blocked the messages of (`shieldgroup`: the broker sends them no live message, but its
//! history reads ignore the block) or is no longer in: those are not caught up. A client
//! that takes no events ([`crate::ClientBuilder::ignore_events`]) catches nothing up.

use crate::connection::{Exchange, Link};
use crate::events::{AckMsg, ConnectionEvent, Delivery, Event};
use crate::reconnect::Core;
use convoke_protocol::handshake::MAX_ACK_IDS;
use convoke_protocol::{limits, ErrorCode, GroupMessage, Push, Request, Response};
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What a link's push reader hands on, with the generation of the link.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "pushes are nearly every item: boxing them would allocate once per push"
)]
pub(crate) enum Incoming {
    /// A push, in the order the broker sent it.
    Push { gen: u64, push: Push },
    /// The link's push stream has ended: nothing more comes from it.
    End { gen: u64 },
}

impl Incoming {
    fn gen(&self) -> u64 {
        match self {
            Self::Push { gen, .. } | Self::End { gen } => *gen,
        }
    }
}

/// Longest a new link waits for the old link's remaining pushes (its reader ends as soon
/// as the old connection is gone; this only bounds a reader that never started).
const DRAIN_OLD_LINK: std::time::Duration = std::time::Duration::from_secs(2);

/// History pages one catch-up requests at a time (of the broker's 256 requests in flight
/// per session, leaving room for the application's).
const PAGES_IN_FLIGHT: usize = 16;

/// How often a gap fill is tried on a live link before the message that showed the gap is
/// held back (tried again after [`RETRY_FIRST`]).
const FILL_ATTEMPTS: u32 = 3;

/// First wait before a held-back message is tried again; doubles up to [`RETRY_MAX`].
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// getGroupInfo requests a catch-up has in flight at once.
const INFO_IN_FLIGHT: usize = 8;

/// What the supervisor and the handles tell the sequencer.
#[derive(Debug)]
pub(crate) enum Control {
    /// A link is up (`reconnect`: not the client's first).
    Up { link: Arc<Link>, reconnect: bool },
    /// A connection state to hand on.
    State(ConnectionEvent),
    /// Resume `group_id` after `seq`.
    Track { group_id: String, seq: u64 },
    /// This client is in `group_id` (it created it): if not tracked yet, track it from
    /// its first message.
    Created { group_id: String },
    /// This client's own call ended the user's membership of `group_id` (leave, destroy)
    /// or the group's messages for them (block): stop tracking it.
    Left { group_id: String },
    /// This client's own call made the user a member of `group_id` again (join, accepted
    /// invite) or unblocked its messages, at broker time `since`: tracked from its first
    /// message from then on.
    Joined { group_id: String, since: i64 },
    /// The client is closed for good: end the event stream after what is queued.
    End,
}

/// What a successful call of this client's (`request`, answered `response` at broker time
/// `now`) tells the sequencer: a leave, destroy or block of a group's messages ends its
/// tracking, a join, accepted invite or unblock starts it again. The broker tells the
/// session that made a call no event of it, so this is the only way the sequencer hears.
pub(crate) fn membership(request: &Request, response: &Response, now: i64) -> Option<Control> {
    use Request as R;
    match request {
        R::LeaveGroup { group_id }
        | R::DestroyGroup { group_id }
        | R::BlockGroupMessages { group_id } => Some(Control::Left {
            group_id: group_id.clone(),
        }),
        R::JoinGroup { group_id, .. }
            if matches!(response, Response::JoinResult { joined: true }) =>
        {
            Some(Control::Joined {
                group_id: group_id.clone(),
                since: now,
            })
        }
        R::AcceptGroupInvite { group_id, .. } | R::UnblockGroupMessages { group_id } => {
            Some(Control::Joined {
                group_id: group_id.clone(),
                since: now,
            })
        }
        _ => None,
    }
}

/// Own sends the sequencer must not hand back: those in flight per group, and the seqs of
/// those answered (until the sequencer has passed them).
#[derive(Debug, Default)]
pub(crate) struct SendTrack {
    /// Every send gets the next ticket, so "sends begun before now" is a ticket range.
    next_ticket: u64,
    in_flight: HashMap<String, BTreeSet<u64>>,
    own: HashMap<String, BTreeSet<u64>>,
}

/// Own seqs remembered per group at most (a group whose messages this client never
/// receives would otherwise collect them).
const OWN_PER_GROUP: usize = 4096;

impl SendTrack {
    /// A send to `group` is about to go out; returns its ticket for [`SendTrack::end`].
    pub(crate) fn begin(&mut self, group: &str) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.in_flight
            .entry(group.to_string())
            .or_default()
            .insert(ticket);
        ticket
    }

    /// The send with `ticket` to `group` ended; `seq` if the broker stored it.
    pub(crate) fn end(&mut self, group: &str, ticket: u64, seq: Option<u64>) {
        if let Some(set) = self.in_flight.get_mut(group) {
            set.remove(&ticket);
            if set.is_empty() {
                self.in_flight.remove(group);
            }
        }
        if let Some(seq) = seq {
            let own = self.own.entry(group.to_string()).or_default();
            own.insert(seq);
            if own.len() > OWN_PER_GROUP {
                own.pop_first();
            }
        }
    }

    /// Whether a send to `group` begun before ticket `before` is still in flight.
    fn in_flight_before(&self, group: &str, before: u64) -> bool {
        self.in_flight
            .get(group)
            .and_then(|s| s.first())
            .is_some_and(|t| *t < before)
    }

    fn is_own(&self, group: &str, seq: u64) -> bool {
        self.own.get(group).is_some_and(|s| s.contains(&seq))
    }

    /// Moves `last` past own seqs that follow it, and forgets own seqs at or below it.
    fn skip_own(&mut self, group: &str, mut last: u64) -> u64 {
        if let Some(own) = self.own.get_mut(group) {
            while own.contains(&(last + 1)) {
                last += 1;
            }
            *own = own.split_off(&(last + 1));
            if own.is_empty() {
                self.own.remove(group);
            }
        }
        last
    }
}

/// The ids of kept events handed on lately, with the link generation each came on.
#[derive(Debug, Default)]
struct RecentIds {
    gens: HashMap<u64, u64>,
    order: VecDeque<u64>,
}

impl RecentIds {
    /// How many ids are remembered.
    const CAPACITY: usize = 4096;

    /// The generation `id` was handed on in, if it was.
    fn get(&self, id: u64) -> Option<u64> {
        self.gens.get(&id).copied()
    }

    fn insert(&mut self, id: u64, gen: u64) {
        if self.gens.insert(id, gen).is_none() {
            self.order.push_back(id);
            if self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.gens.remove(&old);
                }
            }
        }
    }
}

/// Why a history fetch did not complete.
enum FillError {
    /// The link failed: the next link's catch-up will fetch it.
    Lost,
    /// The group is gone or the user is no longer a member: stop tracking it.
    Gone,
    /// The group's history ends before the client's position: the broker's data was rolled
    /// back (restored from a backup) and the seqs after this one will be given to new
    /// messages. Carry on from here, or those messages would be dropped as already seen.
    RolledBack(u64),
}

/// A live message whose gap could not be filled, waiting to be tried again.
#[derive(Debug)]
struct Held {
    message: GroupMessage,
    /// The link it came on: a later link's catch-up fetches it instead.
    gen: u64,
    /// How often it has been held back.
    tries: u32,
    due: tokio::time::Instant,
}

/// How long a message held back `tries` times waits.
fn retry_delay(tries: u32) -> std::time::Duration {
    RETRY_FIRST
        .saturating_mul(1 << tries.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

struct Sequencer {
    core: Arc<Core>,
    app: Option<mpsc::Sender<Delivery>>,
    acks: mpsc::UnboundedSender<AckMsg>,
    /// Per tracked group, the last seq handed on (or passed as this client's own).
    last: HashMap<String, u64>,
    /// The (broker) time of the message at a group's position, when it came from one.
    last_at: HashMap<String, i64>,
    /// Per group, the highest seq handed on, kept across leaves and rejoins: seqs only
    /// grow, so a message at or below it is never handed on again (a rollback lowers it).
    handed: HashMap<String, u64>,
    /// Groups an event was received about but no message yet, with that event's (broker)
    /// time: their messages from then on are fetched at the next resume.
    known: HashMap<String, i64>,
    /// Groups that stopped being the user's on this link (left, removed, destroyed,
    /// blocked): not tracked until a join.
    absent: HashSet<String>,
    /// Live messages held back after failed gap fills.
    held: Vec<Held>,
    kept: RecentIds,
    link: Option<Arc<Link>>,
    /// The newest link whose push stream has ended.
    ended: u64,
    /// The newest broker time this client knows of (welcomes, events, messages): a group
    /// found in the joined list after a reconnect is caught up from here.
    clock: i64,
    /// Pushes of a new link that came while the old one was drained.
    stash: VecDeque<Incoming>,
}

/// Starts the sequencer.
pub(crate) fn spawn(
    core: Arc<Core>,
    pushes: mpsc::Receiver<Incoming>,
    control: mpsc::UnboundedReceiver<Control>,
    app: Option<mpsc::Sender<Delivery>>,
    acks: mpsc::UnboundedSender<AckMsg>,
) {
    let seq = Sequencer {
        core,
        app,
        acks,
        last: HashMap::new(),
        last_at: HashMap::new(),
        handed: HashMap::new(),
        known: HashMap::new(),
        absent: HashSet::new(),
        held: Vec::new(),
        kept: RecentIds::default(),
        link: None,
        ended: 0,
        clock: 0,
        stash: VecDeque::new(),
    };
    tokio::spawn(seq.run(pushes, control));
}

impl Sequencer {
    async fn run(
        mut self,
        mut pushes: mpsc::Receiver<Incoming>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        loop {
            if let Some(stashed) = self.stash.pop_front() {
                self.on_push(stashed).await;
                continue;
            }
            let retry_at = self.held.iter().map(|h| h.due).min();
            tokio::select! {
                biased;
                c = control.recv() => match c {
                    Some(Control::Up { link, reconnect }) => self.on_up(link, reconnect, &mut pushes).await,
                    Some(Control::State(ev)) => self.deliver(Event::Connection(ev), None).await,
                    Some(Control::Track { group_id, seq }) => {
                        self.known.remove(&group_id);
                        self.absent.remove(&group_id);
                        self.handed.remove(&group_id);
                        self.set_position(&group_id, seq, None);
                    }
                    Some(Control::Created { group_id }) => self.created(group_id),
                    Some(Control::Left { group_id }) => self.left(&group_id),
                    Some(Control::Joined { group_id, since }) => self.joined(&group_id, since),
                    Some(Control::End) | None => break,
                },
                () = sleep_until(retry_at), if retry_at.is_some() => self.retry_held().await,
                inc = pushes.recv() => match inc {
                    Some(inc) => self.on_push(inc).await,
                    None => break,
                },
            }
        }
        // What the last link delivered before it closed is still handed on.
        while let Ok(inc) = pushes.try_recv() {
            self.on_push(inc).await;
        }
    }

    async fn deliver(&mut self, event: Event, kept: Option<u64>) {
        if let Some(app) = &self.app {
            if app.send((event, kept)).await.is_err() {
                // The stream was dropped (or never taken and its buffer dropped).
                self.app = None;
            }
        }
    }

    async fn on_up(
        &mut self,
        link: Arc<Link>,
        reconnect: bool,
        pushes: &mut mpsc::Receiver<Incoming>,
    ) {
        // Everything the old link delivered comes first, up to its end (its reader may be
        // blocked on a full channel with more to give); the new link's pushes wait.
        if let Some(old) = self.link.take() {
            if self.core.dial.events && self.ended < old.gen {
                let deadline = tokio::time::Instant::now() + DRAIN_OLD_LINK;
                while self.ended < old.gen {
                    match tokio::time::timeout_at(deadline, pushes.recv()).await {
                        Ok(Some(inc)) if inc.gen() >= link.gen => self.stash.push_back(inc),
                        Ok(Some(inc)) => self.on_push(inc).await,
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        self.link = Some(link.clone());
        // The joined list is the truth from here on; what was held back on the old link is
        // fetched by the catch-up.
        let was_absent = std::mem::take(&mut self.absent);
        self.held.retain(|h| h.gen >= link.gen);
        // The first link: every joined group is caught up from now on. Later links: groups
        // joined while away, from the last time this client knew of.
        let since = if reconnect {
            self.clock
        } else {
            link.welcome.server_time
        };
        self.clock = self.clock.max(link.welcome.server_time);
        if self.app.is_some() {
            self.learn_joined(&link, since).await;
            // A group left on the old link and listed again was rejoined meanwhile: what
            // was handed on untracked after the leave (sent before it) is not fetched again.
            for g in &was_absent {
                if let Some(t) = self.known.get_mut(g) {
                    *t = (*t).max(since.saturating_add(1));
                }
            }
        }
        self.deliver(
            Event::Connection(ConnectionEvent::Connected {
                server: link.server,
                session_id: link.welcome.session_id,
                zero_rtt: link.zero_rtt,
                took: link.took,
            }),
            None,
        )
        .await;
        if reconnect {
            // Nothing to catch up for a client that takes no events (or dropped them).
            let recovered = if self.app.is_some() {
                self.catch_up().await
            } else {
                0
            };
            self.deliver(
                Event::Connection(ConnectionEvent::Resumed { recovered }),
                None,
            )
            .await;
        }
    }

    async fn on_push(&mut self, inc: Incoming) {
        let (gen, push) = match inc {
            Incoming::Push { gen, push } => (gen, push),
            Incoming::End { gen } => {
                self.ended = self.ended.max(gen);
                return;
            }
        };
        match push {
            Push::Kept { id, event } => match self.kept.get(id) {
                // Live and in the login's replay on one link: hand it on once.
                Some(seen) if seen == gen => {}
                // Again on a later link: the old link's acknowledgement may have been lost.
                // Acknowledged again if the application has taken it (else it will be, on
                // this link, when taken).
                Some(_) => {
                    self.kept.insert(id, gen);
                    let _ = self.acks.send(AckMsg::Repeat(id));
                }
                None => {
                    self.kept.insert(id, gen);
                    self.learn(&event);
                    self.deliver(Event::Push(Push::Group(event)), Some(id))
                        .await;
                }
            },
            Push::Message(m) => self.on_message(m, 0).await,
            Push::Group(event) => {
                self.learn(&event);
                self.deliver(Event::Push(Push::Group(event)), None).await;
            }
            Push::MultiDevice(event) => {
                self.learn(&event);
                self.deliver(Event::Push(Push::MultiDevice(event)), None)
                    .await;
            }
            other => self.deliver(Event::Push(other), None).await,
        }
    }

    /// Remembers every group the user is in that is not tracked yet (from `since`, broker
    /// time), so that a resume fetches their messages too: one getJoinedGroups per 500
    /// groups, at each connection.
    async fn learn_joined(&mut self, link: &Link, since: i64) {
        const PAGE: u32 = limits::MAX_JOINED_PAGE;
        for page_num in 1.. {
            let request = Request::GetJoinedGroups {
                page_num,
                page_size: PAGE,
                need_affiliations: false,
                need_role: false,
            };
            let answer =
                tokio::time::timeout(self.core.request_timeout, link.exchange(&request)).await;
            let Ok(Exchange::Answered(Ok(Response::JoinedGroups { groups }))) = answer else {
                tracing::debug!("cannot list joined groups; resuming the tracked ones only");
                return;
            };
            for g in &groups {
                self.note(&g.group_id, since);
            }
            if groups.len() < PAGE as usize {
                return;
            }
        }
    }

    /// What an event says of the user's groups: left, joined, or (any other) in it, so a
    /// resume also fetches its messages.
    fn learn(&mut self, event: &convoke_protocol::GroupEvent) {
        use convoke_protocol::GroupEventOp as Op;
        self.clock = self.clock.max(event.timestamp);
        let g = &event.group_id;
        let names_me = event.users.iter().any(|u| *u == self.core.user_id);
        match event.operation {
            Op::Destroy => self.left(g),
            // Naming the user: removed or blocked; their leave on another device.
            Op::RemoveMember | Op::MemberAbsence if names_me => self.left(g),
            Op::MemberPresence | Op::DirectJoined | Op::AcceptRequest if names_me => {
                self.joined(g, event.timestamp);
            }
            // The user created it on another device: all its messages are theirs.
            Op::Create if event.from == self.core.user_id => self.created(g.clone()),
            Op::Create => {}
            // Told to users who are not members.
            Op::InviteToJoin | Op::JoinPublicGroupDeclined | Op::UnblockMember => {}
            _ => self.note(g, event.timestamp),
        }
    }

    /// `group` is one of the user's: caught up from `since` unless it has a position.
    fn note(&mut self, group: &str, since: i64) {
        if !self.absent.contains(group) && !self.last.contains_key(group) {
            self.known.entry(group.to_string()).or_insert(since);
        }
    }

    /// This user created `group`: tracked from its first message.
    fn created(&mut self, group: String) {
        self.known.remove(&group);
        self.absent.remove(&group);
        if !self.last.contains_key(&group) {
            self.set_position(&group, 0, None);
        }
    }

    /// `group` is no longer the user's: forgotten until a join.
    fn left(&mut self, group: &str) {
        self.last.remove(group);
        self.last_at.remove(group);
        self.known.remove(group);
        self.absent.insert(group.to_string());
    }

    /// The user joined `group` (again) at broker time `since`: tracked from its first
    /// message from then on. A position from before (a leave this client did not hear of)
    /// would "fill" the time away, so it goes; one at a message stamped since the join
    /// stays (the kept join replayed at login comes after the catch-up, which has already
    /// handed on the messages that followed it).
    fn joined(&mut self, group: &str, since: i64) {
        let was_absent = self.absent.remove(group);
        let before =
            self.last.contains_key(group) && self.last_at.get(group).is_none_or(|&at| at < since);
        if before || was_absent {
            self.last.remove(group);
            self.last_at.remove(group);
            self.known.insert(group.to_string(), since);
        } else {
            self.note(group, since);
        }
    }

    /// `group`'s position is `seq`, the message stamped `at` when known.
    fn set_position(&mut self, group: &str, seq: u64, at: Option<i64>) {
        self.last.insert(group.to_string(), seq);
        match at {
            Some(at) => self.last_at.insert(group.to_string(), at),
            None => self.last_at.remove(group),
        };
    }

    /// Hands `m` on unless a message at or after its seq was; returns whether it did.
    async fn deliver_message(&mut self, m: GroupMessage) -> bool {
        if self
            .handed
            .get(&m.group_id)
            .is_some_and(|&top| m.seq <= top)
        {
            return false;
        }
        self.handed.insert(m.group_id.clone(), m.seq);
        self.deliver(Event::Push(Push::Message(m)), None).await;
        true
    }

    /// Moves the group's position past this client's own sends that follow it.
    fn skip_own(&mut self, group: &str, last: u64) -> u64 {
        let last = lock(&self.core.sends).skip_own(group, last);
        self.last.insert(group.to_string(), last);
        last
    }

    /// Waits (up to the request timeout) until no send of this client to `group` is in
    /// flight, so their seqs are known before gaps are judged.
    async fn wait_sends(&self, group: &str) {
        let deadline = tokio::time::Instant::now() + self.core.request_timeout;
        // Only sends begun before now: a steady stream of new ones does not hold this up.
        let before = lock(&self.core.sends).next_ticket;
        loop {
            let changed = self.core.sends_changed.notified();
            if !lock(&self.core.sends).in_flight_before(group, before) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }

    async fn on_message(&mut self, m: GroupMessage, tries: u32) {
        self.clock = self.clock.max(m.timestamp);
        // Sent before the user left (it came after this client's own leave was answered).
        if self.absent.contains(&m.group_id) {
            self.deliver_message(m).await;
            return;
        }
        let Some(&last) = self.last.get(&m.group_id) else {
            // From before the join (the catch-up by time does not fetch it either): handed
            // on, not a start.
            if self
                .known
                .get(&m.group_id)
                .is_some_and(|&t| m.timestamp < t)
            {
                self.deliver_message(m).await;
                return;
            }
            self.known.remove(&m.group_id);
            self.set_position(&m.group_id, m.seq, Some(m.timestamp));
            self.deliver_message(m).await;
            return;
        };
        if m.seq <= last {
            return;
        }
        let mut last = self.skip_own(&m.group_id, last);
        if m.seq > last + 1 {
            self.wait_sends(&m.group_id).await;
            last = self.skip_own(&m.group_id, last);
        }
        if m.seq <= last {
            return;
        }
        if m.seq > last + 1 {
            let Some(link) = self.link.clone() else {
                return;
            };
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.fetch(&link, &m.group_id, last, Some(m.seq)).await {
                    Ok(missed) => {
                        self.hand_on(&m.group_id, missed).await;
                        break;
                    }
                    // (Only a catch-up, which has no upper bound, sees a rollback.)
                    Err(FillError::Gone | FillError::RolledBack(_)) => return,
                    // The next link's catch-up fetches it with the rest.
                    Err(FillError::Lost) if link.is_closed() => return,
                    // Held back: tried again later, unless the next gap (a later message)
                    // fills it first.
                    Err(FillError::Lost) if attempt >= FILL_ATTEMPTS => {
                        let tries = tries + 1;
                        self.held.push(Held {
                            message: m,
                            gen: link.gen,
                            tries,
                            due: tokio::time::Instant::now() + retry_delay(tries),
                        });
                        return;
                    }
                    Err(FillError::Lost) => {
                        tokio::time::sleep(std::time::Duration::from_millis(
                            100 * u64::from(attempt),
                        ))
                        .await;
                    }
                }
            }
        }
        self.set_position(&m.group_id, m.seq, Some(m.timestamp));
        self.deliver_message(m).await;
    }

    /// Tries again the held-back messages that are due, in seq order per group (those of an
    /// older link were left to the catch-up of the current one).
    async fn retry_held(&mut self) {
        let now = tokio::time::Instant::now();
        let gen = self.link.as_ref().map_or(0, |l| l.gen);
        let (mut due, later): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .filter(|h| h.gen == gen)
            .partition(|h| h.due <= now);
        self.held = later;
        due.sort_by(|a, b| {
            (&a.message.group_id, a.message.seq).cmp(&(&b.message.group_id, b.message.seq))
        });
        for h in due {
            self.on_message(h.message, h.tries).await;
        }
    }

    /// Hands on fetched messages in order (skipping own sends and anything already
    /// handed on); returns how many.
    async fn hand_on(&mut self, group: &str, messages: Vec<GroupMessage>) -> u64 {
        let mut n = 0;
        for m in messages {
            let last = self.last.get(group).copied().unwrap_or(0);
            if m.seq <= last {
                continue;
            }
            let own = lock(&self.core.sends).is_own(group, m.seq);
            self.set_position(group, m.seq, Some(m.timestamp));
            if !own && self.deliver_message(m).await {
                n += 1;
            }
        }
        n
    }

    /// Forgets the groups to catch up whose messages the user blocked (the broker sends
    /// them none live; its history reads ignore the block) or is no longer in; returns
    /// those it could not check (left for the next catch-up: a live message still fills
    /// their gap). One getGroupInfo per 100 groups.
    async fn check_groups(&mut self, link: &Arc<Link>) -> HashSet<String> {
        let ids: Vec<String> = self
            .last
            .keys()
            .chain(self.known.keys())
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let batches: Vec<Vec<String>> = ids
            .chunks(limits::MAX_GROUP_INFO_IDS)
            .map(<[String]>::to_vec)
            .collect();
        let timeout = self.core.request_timeout;
        let answers: Vec<_> = futures::stream::iter(batches)
            .map(|batch| {
                let link = link.clone();
                async move {
                    let request = Request::GetGroupInfo {
                        group_ids: batch.clone(),
                    };
                    let answer = tokio::time::timeout(timeout, link.exchange(&request)).await;
                    (batch, answer)
                }
            })
            .buffer_unordered(INFO_IN_FLIGHT)
            .collect()
            .await;
        let mut unchecked = HashSet::new();
        for (batch, answer) in answers {
            let Ok(Exchange::Answered(Ok(Response::GroupInfos { groups }))) = answer else {
                tracing::debug!("cannot check blocked groups; not catching them up yet");
                unchecked.extend(batch.iter().cloned());
                continue;
            };
            let mut answered = HashSet::new();
            for e in groups {
                answered.insert(e.group_id.clone());
                let gone = match (&e.info, &e.error) {
                    (Some(info), _) => info.shieldgroup || info.role.is_none(),
                    (None, Some(err)) => matches!(
                        err.code,
                        ErrorCode::GroupNotJoined | ErrorCode::GroupNotExist
                    ),
                    (None, None) => false,
                };
                if gone {
                    self.last.remove(&e.group_id);
                    self.known.remove(&e.group_id);
                } else if e.info.is_none() {
                    unchecked.insert(e.group_id);
                }
            }
            unchecked.extend(batch.iter().filter(|g| !answered.contains(*g)).cloned());
        }
        unchecked
    }

    /// After a reconnect: every tracked group's messages after its position.
    async fn catch_up(&mut self) -> u64 {
        let Some(link) = self.link.clone() else {
            return 0;
        };
        let unchecked = self.check_groups(&link).await;
        let groups: Vec<(String, u64)> = self
            .last
            .iter()
            .filter(|(g, _)| !unchecked.contains(*g))
            .map(|(g, s)| (g.clone(), *s))
            .collect();
        for (g, _) in &groups {
            self.wait_sends(g).await;
        }
        let this = &*self;
        let fetched: Vec<_> = futures::stream::iter(groups)
            .map(|(g, last)| {
                let link = link.clone();
                async move {
                    let r = this.fetch(&link, &g, last, None).await;
                    (g, r)
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut recovered = 0;
        for (g, r) in fetched {
            match r {
                Ok(messages) => recovered += self.hand_on(&g, messages).await,
                Err(FillError::Gone) => {
                    self.last.remove(&g);
                }
                Err(FillError::RolledBack(head)) => {
                    tracing::warn!(
                        group = %g,
                        head,
                        "the group's history ends before this client's position (the broker \
                         was restored from a backup?): carrying on from its newest message"
                    );
                    self.set_position(&g, head, None);
                    if self.handed.get(&g).is_some_and(|&top| top > head) {
                        self.handed.insert(g, head);
                    }
                }
                Err(FillError::Lost) => {}
            }
        }
        // Groups heard of but with no message yet: what was sent since the client heard of
        // them (newest first, back to that time).
        let known: Vec<(String, i64)> = self
            .known
            .iter()
            .filter(|(g, _)| !unchecked.contains(*g))
            .map(|(g, t)| (g.clone(), *t))
            .collect();
        for (g, since) in known {
            match self.fetch_since(&link, &g, since).await {
                Ok((messages, newest)) => {
                    self.known.remove(&g);
                    // Tracked from here on: after the newest message, or before the first
                    // fetched one (older history is not this client's to hand on).
                    let start = messages.first().map_or(newest, |m| m.seq - 1);
                    self.set_position(&g, start, None);
                    recovered += self.hand_on(&g, messages).await;
                }
                Err(FillError::Gone) => {
                    self.known.remove(&g);
                }
                Err(FillError::Lost | FillError::RolledBack(_)) => {}
            }
        }
        recovered
    }

    /// The messages of `group` stamped at or after `since` (broker time), in order, and
    /// the newest seq in its history (0 if none).
    async fn fetch_since(
        &self,
        link: &Link,
        group: &str,
        since: i64,
    ) -> Result<(Vec<GroupMessage>, u64), FillError> {
        let page = u64::from(limits::MAX_HISTORY_PAGE);
        let mut out: Vec<GroupMessage> = Vec::new();
        let mut before = None;
        let mut newest = None;
        loop {
            let batch = self.history(link, group, before, None, page).await?;
            newest = newest.or_else(|| batch.last().map(|m| m.seq));
            before = batch.first().map(|m| m.seq);
            let older = batch.iter().any(|m| m.timestamp < since);
            out.extend(batch.into_iter().filter(|m| m.timestamp >= since));
            // A page shorter than asked is not the end: the broker caps pages in bytes
            // (`messages.history_page_bytes`); only an empty one is.
            if older || before.is_none_or(|b| b <= 1) {
                break;
            }
        }
        out.sort_by_key(|m| m.seq);
        Ok((out, newest.unwrap_or(0)))
    }

    /// The messages of `group` after `after` (and before `until`, if given), in order.
    async fn fetch(
        &self,
        link: &Link,
        group: &str,
        after: u64,
        until: Option<u64>,
    ) -> Result<Vec<GroupMessage>, FillError> {
        let page = u64::from(limits::MAX_HISTORY_PAGE);
        let (mut out, head) = match until {
            Some(until) => (Vec::new(), until.saturating_sub(1)),
            None => {
                // The first page and the newest seq in one round trip.
                let (first, newest) = futures::join!(
                    self.history(link, group, None, Some(after), page),
                    self.history(link, group, None, None, 1)
                );
                let first = first?;
                let newest = newest?.last().map(|m| m.seq);
                if newest.unwrap_or(0) < after {
                    return Err(FillError::RolledBack(newest.unwrap_or(0)));
                }
                let head = newest.unwrap_or(after);
                let start = first.last().map_or(after, |m| m.seq);
                if head <= start {
                    return Ok(first);
                }
                (first, head)
            }
        };
        let start = out.last().map_or(after, |m| m.seq);
        let afters: Vec<u64> = (start..head).step_by(page as usize).collect();
        let pages: Vec<_> = futures::stream::iter(afters)
            .map(|a| self.span_after(link, group, a, page.min(head - a)))
            .buffered(PAGES_IN_FLIGHT)
            .collect()
            .await;
        for p in pages {
            out.extend(p?);
        }
        if let Some(until) = until {
            out.retain(|m| m.seq < until);
        }
        out.sort_by_key(|m| m.seq);
        out.dedup_by_key(|m| m.seq);
        Ok(out)
    }

    /// The messages with seq in `after + 1 ..= after + span`: one page, or more when the
    /// broker's byte cap on a page (`messages.history_page_bytes`) cut it short.
    async fn span_after(
        &self,
        link: &Link,
        group: &str,
        after: u64,
        span: u64,
    ) -> Result<Vec<GroupMessage>, FillError> {
        let end = after.saturating_add(span);
        let mut out = self.history(link, group, None, Some(after), span).await?;
        while let Some(last) = out.last().map(|m| m.seq) {
            if out.len() as u64 >= span || last >= end {
                break;
            }
            let more = self
                .history(link, group, None, Some(last), end - last)
                .await?;
            if more.is_empty() {
                break;
            }
            out.extend(more);
        }
        Ok(out)
    }

    async fn history(
        &self,
        link: &Link,
        group: &str,
        before: Option<u64>,
        after: Option<u64>,
        limit: u64,
    ) -> Result<Vec<GroupMessage>, FillError> {
        let request = Request::GetGroupMessages {
            group_id: group.to_string(),
            before,
            after,
            limit: u32::try_from(limit.max(1)).unwrap_or(limits::MAX_HISTORY_PAGE),
        };
        match tokio::time::timeout(self.core.request_timeout, link.exchange(&request)).await {
            Ok(Exchange::Answered(Ok(Response::Messages { messages }))) => Ok(messages),
            Ok(Exchange::Answered(Err(e)))
                if matches!(e.code, ErrorCode::GroupNotJoined | ErrorCode::GroupNotExist) =>
            {
                tracing::debug!(group, error = %e, "no longer resuming this group");
                Err(FillError::Gone)
            }
            // A busy or failing broker, or an answer this client does not expect: try
            // again later, never skip the messages.
            Ok(Exchange::Answered(other)) => {
                tracing::warn!(group, ?other, "cannot fetch missed messages yet");
                Err(FillError::Lost)
            }
            _ => Err(FillError::Lost),
        }
    }
}

/// Sleeps until `at` (forever when `None`; the select's guard never polls that case).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Single inserts and removals: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tells the broker which kept events the application has taken, on whichever link is up
/// (after any requests already queued on it), several ids per frame when they pile up.
/// Ids taken while no link is up are not sent: the broker sends those events again at the
/// next login, and the sequencer acknowledges the copies. Ends with the last event stream
/// and client handle.
pub(crate) async fn acknowledge(core: Arc<Core>, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
    let mut msgs = Vec::new();
    let mut sent_since_flush = false;
    // What the application has taken lately: a repeat of one of these is acknowledged
    // again; a repeat of one still in the buffer is acknowledged when it is taken.
    let mut taken = RecentIds::default();
    while rx.recv_many(&mut msgs, MAX_ACK_IDS).await > 0 {
        let mut ids = Vec::new();
        for msg in msgs.drain(..) {
            match msg {
                AckMsg::Taken(id) => {
                    taken.insert(id, 0);
                    ids.push(id);
                }
                AckMsg::Repeat(id) => {
                    if taken.get(id).is_some() {
                        ids.push(id);
                    }
                }
                AckMsg::Flush(done) => {
                    // Everything taken before the flush goes to the writer first.
                    if !ids.is_empty() {
                        sent_since_flush |= send_acks(&core, std::mem::take(&mut ids)).await;
                    }
                    let _ = done.send(std::mem::take(&mut sent_since_flush));
                }
            }
        }
        if !ids.is_empty() {
            sent_since_flush |= send_acks(&core, ids).await;
        }
    }
}

async fn send_acks(core: &Core, ids: Vec<u64>) -> bool {
    match core.link() {
        Some(link) => link.send_acks(ids).await,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_sends_are_skipped_and_forgotten_once_passed() {
        let mut t = SendTrack::default();
        let a = t.begin("g");
        assert!(t.in_flight_before("g", a + 1));
        assert!(!t.in_flight_before("g", a), "only sends begun before count");
        t.end("g", a, Some(5));
        let b = t.begin("g");
        t.end("g", b, Some(6));
        let c = t.begin("g");
        t.end("g", c, None);
        assert!(!t.in_flight_before("g", u64::MAX));
        assert_eq!(t.skip_own("g", 3), 3, "4 is missing: nothing to skip");
        assert!(t.is_own("g", 5));
        assert_eq!(t.skip_own("g", 4), 6);
        assert!(!t.is_own("g", 5), "passed seqs are forgotten");
        assert_eq!(t.skip_own("other", 9), 9);
    }

    #[test]
    fn own_leaves_joins_and_blocks_move_the_group_in_or_out() {
        let g = || "7".to_string();
        let left = |r: Request| match membership(&r, &Response::Done, 5) {
            Some(Control::Left { group_id }) => group_id == "7",
            _ => false,
        };
        let joined = |r: Request, answer: Response| match membership(&r, &answer, 5) {
            Some(Control::Joined { group_id, since }) => group_id == "7" && since == 5,
            _ => false,
        };
        assert!(left(Request::LeaveGroup { group_id: g() }));
        assert!(left(Request::DestroyGroup { group_id: g() }));
        assert!(left(Request::BlockGroupMessages { group_id: g() }));
        let join = || Request::JoinGroup {
            group_id: g(),
            message: String::new(),
        };
        assert!(joined(join(), Response::JoinResult { joined: true }));
        assert!(
            membership(&join(), &Response::JoinResult { joined: false }, 5).is_none(),
            "a join request waiting for approval is no join"
        );
        assert!(joined(
            Request::AcceptGroupInvite {
                group_id: g(),
                invitee: "bob".into()
            },
            Response::Done
        ));
        assert!(joined(
            Request::UnblockGroupMessages { group_id: g() },
            Response::Done
        ));
        assert!(membership(&Request::Ping { nonce: 1 }, &Response::Done, 5).is_none());
    }

    #[test]
    fn a_held_back_message_waits_longer_each_time_up_to_the_cap() {
        assert_eq!(retry_delay(1), RETRY_FIRST);
        assert_eq!(retry_delay(2), RETRY_FIRST * 2);
        assert_eq!(retry_delay(3), RETRY_FIRST * 4);
        assert_eq!(retry_delay(10), RETRY_MAX);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn recent_ids_remember_the_generation_and_forget_the_oldest() {
        let mut r = RecentIds::default();
        r.insert(1, 1);
        assert_eq!(r.get(1), Some(1));
        r.insert(1, 2);
        assert_eq!(r.get(1), Some(2));
        for id in 2..=(RecentIds::CAPACITY as u64 + 1) {
            r.insert(id, 3);
        }
        assert_eq!(r.get(1), None);
        assert_eq!(r.get(2), Some(3));
    }
}
