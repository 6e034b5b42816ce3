//! The Convoke Rust client: one async method per call of the group API, one ordered event
//! stream, shared-file transfers with progress and cancellation, and a connection that
//! looks after itself.
//!
//! ```no_run
//! # async fn demo() -> Result<(), convoke_client::ClientError> {
//! use convoke_client::{Client, ConnectionEvent, CreateGroupData, Event, Push};
//! use futures::StreamExt;
//!
//! let client = Client::builder()
//!     .servers(["10.0.0.1:4433", "10.0.0.2:4433"]) // or .server("127.0.0.1:4433")
//!     .token_provider(|| async { Ok("<token from `convoke token --user alice`>".to_string()) })
//!     .ca_file("convoke-data/tls/cert.pem")
//!     .connect()
//!     .await?;
//! let mut events = client.events();
//! let group_id = client
//!     .create_group(CreateGroupData {
//!         groupname: "game night".into(),
//!         members: vec!["bob".into()],
//!         ..CreateGroupData::default()
//!     })
//!     .await?;
//! client.send_group_message(&group_id, "hello", false).await?;
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Push(Push::Message(m)) => println!("{}: {:?}", m.seq, m.payload),
//!         Event::Push(other) => println!("{other:?}"),
//!         Event::Connection(ConnectionEvent::Reconnecting { reason, attempt, .. }) => {
//!             println!("offline ({reason}), attempt {attempt}")
//!         }
//!         Event::Connection(ConnectionEvent::Resumed { recovered, .. }) => {
//!             println!("back; {recovered} missed messages were fetched and handed on above")
//!         }
//!         Event::Connection(state) => println!("{state:?}"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Shape (like async-nats): [`Client`] is a cheap `Clone` handle; a connection owns a QUIC
//! control stream on which requests are pipelined (many in flight, answered in any order),
//! and the broker's pushes arrive in order on an [`EventStream`] of [`Event`]s.
//!
//! **Staying connected.** When the connection drops (network loss, the broker restarting or
//! shutting down, a slow-consumer cut), the client reconnects by itself with jittered
//! exponential back-off ([`ReconnectPolicy`]), to the same server or the next of the list,
//! asking the token provider for a fresh token; the same `Client` and `EventStream` carry on,
//! and the stream says what happens ([`ConnectionEvent`]). Calls made meanwhile wait for the
//! new connection up to their timeout; reads and sends go out again if the connection dropped
//! before their answer (a send carries a client message id, so the broker stores it once).
//! Messages missed while away are fetched from history and handed on, in order, before newer
//! ones: no gap, no duplicate. A reconnect to a broker seen before sends its hello in TLS
//! 0-RTT early data. A change of the client's address (Wi-Fi to cellular, a NAT rebinding)
//! does not even reconnect: QUIC migrates the connection. The client is closed for good by
//! [`Client::close`], by dropping the last handle, or by a refusal retrying cannot fix (a
//! bad or expired token); then every call returns [`ClientError::Closed`] and the stream
//! ends.
//!
//! Modules: [`builder`] (options and the handshake), [`client`] (the handle and raw
//! requests), [`api`] (the typed methods), [`events`], [`reconnect`] (the policy),
//! [`transfer`] (shared files), [`error`], [`tls`] (trust: CA file or pinned fingerprint).
//! `connection` holds one connection's tasks and `resume` the sequencer that makes the
//! event stream gap-free.

pub mod api;
pub mod builder;
pub mod client;
mod connection;
pub mod error;
pub mod events;
pub mod reconnect;
mod resume;
pub mod tls;
pub mod transfer;

pub use api::{Invited, MessageSent, ReadUsers};
pub use builder::{ClientBuilder, TokenProvider};
pub use client::Client;
pub use error::ClientError;
pub use events::{ConnectionEvent, Event, EventStream};
pub use reconnect::ReconnectPolicy;
pub use tls::fingerprint_sha256;
pub use transfer::{
    progress_channel, CancelHandle, DownloadDest, Progress, ProgressFn, Transfer, UploadSource,
};

/// The wire contract, re-exported so that users need only this crate.
pub use convoke_protocol as protocol;
pub use convoke_protocol::response::ReadUser;
pub use convoke_protocol::{
    ApiError, CreateGroupData, ErrorCode, EventDetail, GroupEvent, GroupEventOp, GroupInfo,
    GroupInfoEntry, GroupMessage, JoinedGroup, MemberEntry, MuteEntry, PublicGroup, Push, Request,
    Response, Role, SharedFile, Welcome,
};
