//! Staying connected: the state every [`crate::Client`] handle shares (`Core`), the
//! reconnect policy, and the supervisor task that replaces a dropped connection.
//!
//! A client has one `Link` (QUIC connection) at a time. When it ends for a reason that
//! retrying can fix (network loss, idle timeout, the broker restarting or shutting down, a
//! slow-consumer cut), the supervisor tells the application (`Reconnecting`, with the
//! reason and the attempt), waits a jittered exponential back-off, and dials again: the
//! same server first, then the next of the configured servers in turn (one that has not
//! answered within the dial stagger no longer holds up the next: `Dial::connect_any`),
//! asking the token provider for a token each time. A new link is announced to the sequencer
//! (`resume`), which fetches what was missed before any newer push. Calls made
//! meanwhile wait for the new link (up to their timeout). A clean [`crate::Client::close`]
//! or a refusal that retrying cannot fix (bad or expired token, unsupported version, too
//! many sessions, a protocol violation) ends the client instead (`GaveUp`). A session the
//! broker ends because its token expired is reported (`TokenExpired`) and replaced with a
//! token from the provider, or, with a fixed token, ends the client.

use crate::builder::Dial;
use crate::connection::Link;
use crate::error::ClientError;
use crate::events::ConnectionEvent;
use crate::resume::{Control, Incoming, SendTrack};
use convoke_protocol::close;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// How long a link must stay up before the next drop starts the back-off afresh.
const STABLE: Duration = Duration::from_secs(10);

/// When and how often a client reconnects after its connection drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Whether to reconnect at all. Default: true.
    pub enabled: bool,
    /// The back-off before the first attempt after a drop. Default 100 ms.
    pub initial_delay: Duration,
    /// The longest back-off; each failed attempt doubles it up to this. Default 5 s.
    pub max_delay: Duration,
    /// Attempts after one drop before giving up; `None` (the default) tries forever.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// Never reconnect: the client ends with its first connection.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// The back-off before attempt `attempt` (1-based): `initial * 2^(attempt-1)`, capped
    /// at `max_delay`, then a random point in its upper half (so clients cut off together
    /// do not come back together).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let full = self
            .initial_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let half = full / 2;
        half + full.saturating_sub(half).mul_f64(rand::random::<f64>())
    }
}

/// Where a client's connection stands.
#[derive(Debug, Clone)]
pub(crate) enum State {
    /// Connected: requests go to this link.
    Up(Arc<Link>),
    /// The link dropped and the client is reconnecting; why it dropped.
    Down(String),
    /// Closed for good (closed by the application, or given up).
    Closed(ClientError),
}

/// What every handle and background task of one client shares.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) dial: Dial,
    state: watch::Sender<State>,
    closing: watch::Sender<bool>,
    pub(crate) request_timeout: Duration,
    /// The user every connection of this client acts as.
    pub(crate) user_id: String,
    pub(crate) app_admin: bool,
    /// This client's own sends, so the sequencer does not hand them back as missed.
    pub(crate) sends: Mutex<SendTrack>,
    pub(crate) sends_changed: Notify,
    /// To the sequencer: new links, state changes, resume points.
    pub(crate) control: mpsc::UnboundedSender<Control>,
    /// To the sequencer: every link's pushes.
    pushes: mpsc::Sender<Incoming>,
}

impl Core {
    pub(crate) fn new(
        dial: Dial,
        first: Arc<Link>,
        request_timeout: Duration,
        control: mpsc::UnboundedSender<Control>,
        pushes: mpsc::Sender<Incoming>,
    ) -> Arc<Self> {
        Arc::new(Self {
            dial,
            user_id: first.welcome.user_id.clone(),
            app_admin: first.welcome.app_admin,
            state: watch::channel(State::Up(first)).0,
            closing: watch::channel(false).0,
            request_timeout,
            sends: Mutex::new(SendTrack::default()),
            sends_changed: Notify::new(),
            control,
            pushes,
        })
    }

    /// Starts reading `link`'s pushes into the sequencer (once it has been told of the
    /// link), unless this client takes no pushes.
    pub(crate) fn read_pushes(&self, link: &Arc<Link>) {
        if self.dial.events {
            link.read_pushes(self.pushes.clone());
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state.borrow().clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }

    /// The current link, if connected (it may be closing).
    pub(crate) fn link(&self) -> Option<Arc<Link>> {
        match &*self.state.borrow() {
            State::Up(link) => Some(link.clone()),
            _ => None,
        }
    }

    /// Whether the application closed the client.
    pub(crate) fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Marks the client as closing: the supervisor stops reconnecting.
    pub(crate) fn begin_close(&self) {
        self.closing.send_replace(true);
    }

    /// Waits for a live link until `deadline`; fails with the reason the client is not
    /// connected.
    pub(crate) async fn wait_link(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<Arc<Link>, ClientError> {
        let mut rx = self.subscribe();
        loop {
            let down = match &*rx.borrow_and_update() {
                State::Up(link) if !link.is_closed() => return Ok(link.clone()),
                State::Up(_) => "the connection dropped".to_string(),
                State::Down(reason) => reason.clone(),
                State::Closed(err) => return Err(err.clone()),
            };
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return Err(ClientError::Disconnected {
                        reason: format!("not reconnected in time: {down}"),
                    })
                }
            }
        }
    }

    /// Waits until the client is closed for good, and returns why.
    pub(crate) async fn wait_closed(&self) -> ClientError {
        let mut rx = self.subscribe();
        loop {
            if let State::Closed(err) = &*rx.borrow_and_update() {
                return err.clone();
            }
            if rx.changed().await.is_err() {
                return ClientError::Closed {
                    code: None,
                    reason: "client state dropped".to_string(),
                };
            }
        }
    }
}

/// Why an ended connection must not be replaced, if it must not.
fn final_reason(err: &ClientError) -> Option<String> {
    match err {
        // A refused hello: the token, the version or the hello itself is wrong. Other codes
        // (a busy or failing broker) may pass.
        ClientError::Api(e) if err.is_refused_hello() => Some(format!("refused: {e}")),
        ClientError::Tls(_) | ClientError::Protocol(_) => Some(err.to_string()),
        // HANDSHAKE_REFUSED without a refusal the client could read is a handshake that
        // timed out (a slow network): retried. Refusals come as `Api` errors.
        ClientError::Closed {
            code:
                Some(
                    close::PROTOCOL_VIOLATION
                    | close::MALFORMED_FRAME
                    | close::FRAME_TOO_LARGE
                    | close::SESSION_LIMIT,
                ),
            ..
        } => Some(err.to_string()),
        _ => None,
    }
}

/// Replaces `link` whenever it drops, until the client closes or gives up.
pub(crate) async fn supervise(core: Arc<Core>, mut link: Arc<Link>, mut target: usize) {
    let mut closing = core.closing.subscribe();
    // Attempts since the last link that stayed up for `STABLE`: a link that drops soon
    // after it came (a broker that keeps cutting a client that does not read its events)
    // does not reset the back-off, so such a client does not redial every 100 ms.
    let mut attempt = 0u32;
    let mut up_since = tokio::time::Instant::now();
    loop {
        let err = tokio::select! {
            err = link.wait_closed() => err,
            _ = until_closing(&mut closing) => {
                // close() may have found no link to close (it ran while this one was dialled).
                link.fail(close::NORMAL, "closed by the application");
                link.wait_closed().await
            }
        };
        if core.is_closing() {
            finish(&core, err);
            return;
        }
        let policy = &core.dial.policy;
        if err.is_token_expired() {
            // Surfaced on its own, so that an application can log in again; a token provider
            // gives the reconnect a new token.
            let refreshing = policy.enabled && core.dial.refreshes_token();
            let _ = core
                .control
                .send(Control::State(ConnectionEvent::TokenExpired {
                    reason: err.to_string(),
                    refreshing,
                }));
            if !refreshing {
                let why = format!("token expired: log in again with a new token ({err})");
                give_up(&core, err, why);
                return;
            }
        }
        if let Some(why) = final_reason(&err).or_else(|| {
            (!policy.enabled).then(|| format!("connection lost ({err}); reconnecting is off"))
        }) {
            give_up(&core, err, why);
            return;
        }
        tracing::info!(reason = %err, "connection lost; reconnecting");
        let mut reason = err.to_string();
        core.state.send_replace(State::Down(reason.clone()));
        if up_since.elapsed() >= STABLE {
            attempt = 0;
        }
        let failed_before = attempt;
        // A broker that said it is shutting down will not answer soon: a client with
        // several servers (a cluster's nodes) goes to the next one at once instead of
        // spending a connect timeout on it first.
        let mut moving = matches!(
            err,
            ClientError::Closed {
                code: Some(close::SHUTDOWN),
                ..
            }
        );
        let next = loop {
            attempt += 1;
            if policy
                .max_attempts
                .is_some_and(|max| attempt - failed_before > max)
            {
                let why = format!(
                    "gave up after {} attempts: {reason}",
                    attempt - failed_before - 1
                );
                give_up(
                    &core,
                    ClientError::Disconnected {
                        reason: why.clone(),
                    },
                    why,
                );
                return;
            }
            let delay = policy.delay(attempt);
            let _ = core
                .control
                .send(Control::State(ConnectionEvent::Reconnecting {
                    reason: reason.clone(),
                    attempt,
                    delay,
                }));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = until_closing(&mut closing) => {
                    finish(&core, ClientError::Closed {
                        code: Some(close::NORMAL),
                        reason: "closed by the application while reconnecting".to_string(),
                    });
                    return;
                }
            }
            // The same server first (unless it is shutting down), then the others in turn.
            if attempt > 1 || std::mem::take(&mut moving) {
                target = core.dial.next_target(target);
            }
            let dialled = tokio::select! {
                r = core.dial.connect_any(target) => r.map(|(winner, opened)| {
                    target = winner;
                    opened
                }),
                _ = until_closing(&mut closing) => {
                    finish(&core, ClientError::Closed {
                        code: Some(close::NORMAL),
                        reason: "closed by the application while reconnecting".to_string(),
                    });
                    return;
                }
            };
            match dialled {
                Ok(opened) if opened.welcome.user_id != core.user_id => {
                    opened.connection.close(close::NORMAL.into(), b"wrong user");
                    let why = format!(
                        "the token provider gave a token for {:?}, not {:?}",
                        opened.welcome.user_id, core.user_id
                    );
                    give_up(&core, ClientError::Connect(why.clone()), why);
                    return;
                }
                Ok(opened) => break Link::start(opened),
                Err(e) => {
                    if let Some(why) = final_reason(&e) {
                        give_up(&core, e, why);
                        return;
                    }
                    tracing::debug!(attempt, error = %e, "reconnect attempt failed");
                    reason = e.to_string();
                }
            }
        };
        tracing::info!(server = %next.server, attempt, zero_rtt = next.zero_rtt, "reconnected");
        link = next;
        up_since = tokio::time::Instant::now();
        if core.is_closing() {
            link.fail(close::NORMAL, "closed by the application");
            continue;
        }
        core.state.send_replace(State::Up(link.clone()));
        let _ = core.control.send(Control::Up {
            link: link.clone(),
            reconnect: true,
        });
        core.read_pushes(&link);
    }
}

/// Resolves once the application closes the client.
async fn until_closing(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not across an await.
    let _ = rx.wait_for(|c| *c).await.map(|_| ());
}

fn give_up(core: &Core, err: ClientError, why: String) {
    tracing::warn!(reason = %why, "giving up on the connection");
    let _ = core
        .control
        .send(Control::State(ConnectionEvent::GaveUp { reason: why }));
    finish(core, err);
}

/// The client is closed for good: calls fail with `err`, the event stream ends after what
/// it holds.
fn finish(core: &Core, err: ClientError) {
    let _ = core.control.send(Control::End);
    core.state.send_replace(State::Closed(err));
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoke_protocol::ErrorCode;

    #[test]
    fn back_off_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let p = ReconnectPolicy::default();
        for _ in 0..100 {
            let d1 = p.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d40 = p.delay(40);
            assert!(d40 >= Duration::from_millis(2500) && d40 <= Duration::from_secs(5));
        }
    }

    #[test]
    fn refusals_retrying_cannot_fix_are_final() {
        use convoke_protocol::ApiError;
        let token = ClientError::Api(ApiError::new(ErrorCode::TokenNotAssigned, "expired"));
        assert!(final_reason(&token).is_some());
        let slow = ClientError::Closed {
            code: Some(close::SLOW_CONSUMER),
            reason: "slow".into(),
        };
        assert!(final_reason(&slow).is_none());
        let shutdown = ClientError::Closed {
            code: Some(close::SHUTDOWN),
            reason: "bye".into(),
        };
        assert!(final_reason(&shutdown).is_none());
        let limit = ClientError::Closed {
            code: Some(close::SESSION_LIMIT),
            reason: "too many".into(),
        };
        assert!(final_reason(&limit).is_some());
        assert!(final_reason(&ClientError::Connect("unreachable".into())).is_none());
    }
}
