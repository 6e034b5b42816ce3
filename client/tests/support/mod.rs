//! A scripted stand-in for the broker, speaking the real wire protocol over real QUIC, so the
//! client's transport (handshake, pipelining, pushes, closes, transfers) is tested without
//! the broker crate. Behaviour is keyed on request contents:
//!
//! - token `bad`: refused with TOKEN_NOT_ASSIGNED; a hello without the protocol version: UNSUPPORTED_VERSION
//! - `ping`: pong; `createGroup`: group "42"
//! - `getGroupAdmin{g}`: answers `[g]` after `g` milliseconds (out-of-order answers)
//! - `updateGroupAnnouncement{n}`: pushes `n` updateAnnouncement events, then Done
//! - `sendGroupMessage`: pushes the message to every session, answers MessageSent
//! - `inviteUsersToGroup{users}`: pushes one kept inviteToJoin per user (ids 100, 101, ...),
//!   answers them as pending; acknowledgements are recorded in `Seen::acks`
//! - `fetchGroupAnnouncement`: answers Done (a wrong variant)
//! - `leaveGroup`: never answered
//! - `destroyGroup{code}`: closes the connection with that code and reason "you are too slow"
//! - anything else: NOT_IMPLEMENTED
//! - uploads to group `ni`: NOT_IMPLEMENTED outcome; other uploads are stored
//! - downloads of `short`: announce 100 bytes, send 50; unknown files: DOWNLOAD_FILE_ERROR

#![allow(
    dead_code,
    reason = "each test file uses a different part of the support module"
)]

use bytes::BytesMut;
use convoke_protocol::codec::{decode_frame, encode_frame, MAX_FRAME_LEN};
use convoke_protocol::handshake::{negotiate, ClientFrame, ServerFrame, Welcome, PROTOCOL_VERSION};
use convoke_protocol::transfer::{TransferHeader, TransferReply};
use convoke_protocol::{
    close, ApiError, ErrorCode, EventDetail, GroupEvent, GroupEventOp, GroupMessage, Push, Request,
    Response, SharedFile,
};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the fake saw, for assertions.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Hellos received.
    pub hellos: u64,
    /// Messages sent so far (the last seq given).
    pub messages: u64,
    /// Files stored by uploads: id -> bytes.
    pub files: HashMap<String, Vec<u8>>,
    /// Reset codes of upload streams the client abandoned.
    pub upload_resets: Vec<u64>,
    /// Connections that ended, with how.
    pub closes: Vec<String>,
    /// The push queue of every welcomed session (messages go to all of them).
    pub sessions: Vec<mpsc::Sender<Push>>,
    /// Kept-event ids the clients acknowledged, in arrival order.
    pub acks: Vec<u64>,
}

pub(crate) struct FakeBroker {
    pub addr: SocketAddr,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub seen: Arc<Mutex<Seen>>,
    endpoint: Endpoint,
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.endpoint.close(VarInt::from_u32(4), b"test over");
    }
}

impl FakeBroker {
    /// Listens on 127.0.0.1 at a free port with a CA-capable self-signed certificate for
    /// localhost and 127.0.0.1 (like the broker's development certificate).
    pub(crate) async fn start() -> Self {
        Self::start_with_welcome_delay(Duration::ZERO).await
    }

    /// [`FakeBroker::start`], answering each hello only after `delay`: a server that is up
    /// but slow to welcome.
    pub(crate) async fn start_with_welcome_delay(delay: Duration) -> Self {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("valid names");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key generation");
        let cert = params.self_signed(&key).expect("self-signed");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("cert");
        tls.alpn_protocols = vec![convoke_protocol::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic tls");
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint =
            Endpoint::server(config, "127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = endpoint.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let accepting = endpoint.clone();
        let state = seen.clone();
        tokio::spawn(async move {
            let sessions = Arc::new(AtomicU64::new(1));
            while let Some(incoming) = accepting.accept().await {
                let state = state.clone();
                let sessions = sessions.clone();
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        let id = sessions.fetch_add(1, Ordering::Relaxed);
                        serve(conn.clone(), id, state.clone(), delay).await;
                        let end = conn.closed().await;
                        state.lock().unwrap().closes.push(end.to_string());
                    }
                });
            }
        });
        Self {
            addr,
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            seen,
            endpoint,
        }
    }

    /// A client builder for this broker, trusting its certificate, as `user`.
    /// A builder for `user`. The scripted broker keeps no state across connections, so
    /// these clients do not reconnect (reconnecting is tested against the real broker).
    pub(crate) fn client(&self, user: &str) -> convoke_client::ClientBuilder {
        convoke_client::Client::builder()
            .server_addr(self.addr)
            .token(user)
            .ca_pem(self.cert_pem.clone().into_bytes())
            .reconnect(convoke_client::ReconnectPolicy::disabled())
    }

    pub(crate) fn fingerprint(&self) -> String {
        convoke_client::fingerprint_sha256(&self.cert_der)
    }
}

/// Polls `check` until it holds or `secs` pass.
pub(crate) async fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

/// Reads one frame of a concrete type (bincode stays out of the client's dependencies).
macro_rules! reader {
    ($name:ident, $ty:ty) => {
        async fn $name(recv: &mut RecvStream, buf: &mut BytesMut) -> Option<$ty> {
            loop {
                if let Some(v) = decode_frame::<$ty>(buf, MAX_FRAME_LEN).ok()? {
                    return Some(v);
                }
                let chunk = recv.read_chunk(64 * 1024, true).await.ok()??;
                buf.extend_from_slice(&chunk.bytes);
            }
        }
    };
}
reader!(read_client_frame, ClientFrame);
reader!(read_transfer_header, TransferHeader);

macro_rules! framer {
    ($name:ident, $ty:ty) => {
        fn $name(value: &$ty) -> bytes::Bytes {
            let mut buf = BytesMut::new();
            encode_frame(value, &mut buf).expect("encodes");
            buf.freeze()
        }
    };
}
framer!(server_frame, ServerFrame);
framer!(push_frame, Push);
framer!(outcome_frame, TransferReply);

async fn serve(conn: Connection, session_id: u64, seen: Arc<Mutex<Seen>>, delay: Duration) {
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let mut buf = BytesMut::new();
    let Some(ClientFrame::Hello(hello)) = read_client_frame(&mut recv, &mut buf).await else {
        conn.close(VarInt::from_u32(close::PROTOCOL_VIOLATION), b"no hello");
        return;
    };
    seen.lock().unwrap().hellos += 1;
    tokio::time::sleep(delay).await;
    let refusal = if hello.token == "bad" {
        Some(ApiError::new(
            ErrorCode::TokenNotAssigned,
            "token \"bad\" is not valid",
        ))
    } else {
        negotiate(&hello.versions, &[PROTOCOL_VERSION]).err()
    };
    if let Some(err) = refusal {
        let _ = send
            .write_all(&server_frame(&ServerFrame::Refused(err.clone())))
            .await;
        let _ = send.finish();
        // Let the frame arrive before the close overtakes it.
        let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
        // As the broker does: the refusal again, in the shared text form.
        conn.close(
            VarInt::from_u32(close::HANDSHAKE_REFUSED),
            &convoke_protocol::handshake::refusal_reason(&err),
        );
        return;
    }
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        user_id: hello.token.clone(),
        app_admin: false,
        session_id,
        server_time: 1,
    };
    if send
        .write_all(&server_frame(&ServerFrame::Welcome(welcome)))
        .await
        .is_err()
    {
        return;
    }
    let Ok(mut push_stream) = conn.open_uni().await else {
        return;
    };
    let (push_tx, mut push_rx) = mpsc::channel::<Push>(16);
    tokio::spawn(async move {
        while let Some(push) = push_rx.recv().await {
            if push_stream.write_all(&push_frame(&push)).await.is_err() {
                return;
            }
        }
    });
    let (resp_tx, mut resp_rx) = mpsc::channel::<ServerFrame>(64);
    tokio::spawn(async move {
        while let Some(frame) = resp_rx.recv().await {
            if send.write_all(&server_frame(&frame)).await.is_err() {
                return;
            }
        }
    });
    seen.lock().unwrap().sessions.push(push_tx.clone());
    tokio::spawn(transfers(conn.clone(), seen.clone()));
    loop {
        let (id, request) = match read_client_frame(&mut recv, &mut buf).await {
            Some(ClientFrame::Request { id, request }) => (id, request),
            Some(ClientFrame::Ack { ids }) => {
                seen.lock().unwrap().acks.extend(ids);
                continue;
            }
            _ => break,
        };
        let (conn, push_tx, resp_tx) = (conn.clone(), push_tx.clone(), resp_tx.clone());
        let user = hello.token.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            if let Some(result) = answer(&conn, &user, request, &push_tx, &seen).await {
                let _ = resp_tx.send(ServerFrame::Response { id, result }).await;
            }
        });
    }
}

fn event(n: u64, from: &str) -> Push {
    Push::Group(GroupEvent {
        operation: GroupEventOp::UpdateAnnouncement,
        group_id: "42".into(),
        group_name: "g".into(),
        from: from.into(),
        users: vec![],
        detail: EventDetail::Announcement {
            announcement: n.to_string(),
        },
        timestamp: n as i64,
    })
}

async fn answer(
    conn: &Connection,
    user: &str,
    request: Request,
    push: &mpsc::Sender<Push>,
    seen: &Mutex<Seen>,
) -> Option<Result<Response, ApiError>> {
    Some(Ok(match request {
        Request::Ping { nonce } => Response::Pong {
            nonce,
            server_time: 2,
        },
        Request::CreateGroup { .. } => Response::GroupCreated {
            group_id: "42".into(),
        },
        Request::GetGroupAdmin { group_id } => {
            let ms = group_id.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::Users {
                users: vec![group_id],
            }
        }
        Request::InviteUsersToGroup { users, group_id } => {
            for (i, u) in users.iter().enumerate() {
                let kept = Push::Kept {
                    id: 100 + i as u64,
                    event: GroupEvent {
                        operation: GroupEventOp::InviteToJoin,
                        group_id: group_id.clone(),
                        group_name: "g".into(),
                        from: user.into(),
                        users: vec![u.clone()],
                        detail: EventDetail::None,
                        timestamp: i as i64,
                    },
                };
                if push.send(kept).await.is_err() {
                    break;
                }
            }
            Response::Invited {
                pending: users,
                joined: vec![],
            }
        }
        Request::UpdateGroupAnnouncement { announcement, .. } => {
            let n: u64 = announcement.parse().unwrap_or(0);
            for i in 0..n {
                if push.send(event(i, user)).await.is_err() {
                    break;
                }
            }
            Response::Done
        }
        Request::SendGroupMessage {
            group_id,
            payload,
            allow_group_ack,
            ..
        } => {
            // Each send gets the next seq, as on the real broker (clients drop repeats).
            let seq = {
                let mut seen = seen.lock().unwrap();
                seen.messages += 1;
                seen.messages
            };
            let message = Push::Message(GroupMessage {
                group_id,
                msg_id: format!("m{seq}"),
                seq,
                from: user.into(),
                payload,
                timestamp: 3,
                allow_group_ack,
            });
            let sessions = seen.lock().unwrap().sessions.clone();
            for session in sessions {
                let _ = session.send(message.clone()).await;
            }
            Response::MessageSent {
                msg_id: format!("m{seq}"),
                seq,
                timestamp: 3,
            }
        }
        Request::FetchGroupAnnouncement { .. } => Response::Done,
        Request::LeaveGroup { .. } => return None,
        Request::DestroyGroup { group_id } => {
            // Let the other requests of the test get in flight first.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let code = group_id.parse().unwrap_or(3);
            conn.close(VarInt::from_u32(code), b"you are too slow");
            return None;
        }
        other => return Some(Err(ApiError::not_implemented(other.method()))),
    }))
}

async fn transfers(conn: Connection, seen: Arc<Mutex<Seen>>) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(transfer(send, recv, seen.clone()));
    }
}

fn entry(file_id: &str, name: &str, bytes: &[u8]) -> SharedFile {
    SharedFile {
        file_id: file_id.into(),
        file_name: name.into(),
        file_owner: "alice".into(),
        file_size: bytes.len() as u64,
        created: 5,
        content_type: "application/octet-stream".into(),
        sha256: hex::encode(Sha256::digest(bytes)),
        secret: String::new(),
    }
}

async fn transfer(mut send: SendStream, mut recv: RecvStream, seen: Arc<Mutex<Seen>>) {
    let mut buf = BytesMut::new();
    let Some(header) = read_transfer_header(&mut recv, &mut buf).await else {
        return;
    };
    match header {
        TransferHeader::Upload {
            group_id,
            file_name,
            size,
            ..
        } => {
            if group_id == "ni" {
                let outcome =
                    TransferReply::Outcome(Err(ApiError::not_implemented("uploadGroupSharedFile")));
                let _ = send.write_all(&outcome_frame(&outcome)).await;
                let _ = send.finish();
                let _ = recv.stop(VarInt::from_u32(0));
                return;
            }
            let mut bytes = buf.to_vec();
            loop {
                match recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(chunk)) => bytes.extend_from_slice(&chunk.bytes),
                    Ok(None) => break,
                    Err(quinn::ReadError::Reset(code)) => {
                        seen.lock().unwrap().upload_resets.push(code.into_inner());
                        return;
                    }
                    Err(_) => return,
                }
            }
            let result = if bytes.len() as u64 == size {
                let file_id = format!("f{}", seen.lock().unwrap().files.len() + 1);
                let file = entry(&file_id, &file_name, &bytes);
                seen.lock().unwrap().files.insert(file_id, bytes);
                Ok(file)
            } else {
                Err(ApiError::new(ErrorCode::UploadFileError, "size mismatch"))
            };
            let _ = send
                .write_all(&outcome_frame(&TransferReply::Outcome(result)))
                .await;
            let _ = send.finish();
        }
        TransferHeader::Download { file_id, .. } => {
            if file_id == "short" {
                let mut file = entry("short", "short.bin", &[0; 100]);
                file.file_size = 100;
                let _ = send
                    .write_all(&outcome_frame(&TransferReply::Outcome(Ok(file))))
                    .await;
                let _ = send.write_all(&[0; 50]).await;
                let _ = send.finish();
                return;
            }
            let stored = seen.lock().unwrap().files.get(&file_id).cloned();
            let Some(bytes) = stored else {
                let outcome = TransferReply::Outcome(Err(ApiError::new(
                    ErrorCode::DownloadFileError,
                    format!("no file {file_id:?}"),
                )));
                let _ = send.write_all(&outcome_frame(&outcome)).await;
                let _ = send.finish();
                return;
            };
            let file = entry(&file_id, "stored.bin", &bytes);
            let _ = send
                .write_all(&outcome_frame(&TransferReply::Outcome(Ok(file))))
                .await;
            let _ = send.write_all(&bytes).await;
            let _ = send.finish();
            // Keep the stream alive until the client has everything.
            let _ = send.stopped().await;
        }
    }
}
