//! The hello: what a broker does with the first frame of a connection before it knows who is
//! calling. Either raw bytes read as a client frame, or a hello carrying a real token (minted
//! with the test secret for a fuzzed user, admin flag and expiry) that the fuzzer may alter.
//!
//! The checks follow the broker's order (`session::authenticate`: version negotiation,
//! device id, token) and assert what must never happen: a panic; a token accepted that is
//! not byte for byte one the secret signed; claims that differ from what was signed; an
//! expired token or a bad user id accepted; a negotiated version that is not the highest
//! common one. And what must happen: an unaltered, unexpired token for a valid user passes.
#![no_main]

use arbitrary::Arbitrary;
use convoke_broker::auth::{mint, verify};
use convoke_protocol::codec::{decode_body, frame_bytes, HEADER_LEN};
use convoke_protocol::handshake::negotiate;
use convoke_protocol::ids::check_user_id;
use convoke_protocol::{ClientFrame, Hello, SUPPORTED_VERSIONS};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"convoke-fuzz-secret-0123456789abcdef";

#[derive(Debug, Arbitrary)]
enum Input {
    /// Bytes as they come off the control stream (the frame body).
    Raw(Vec<u8>),
    /// A hello with a minted token, then edits to that token.
    Minted {
        versions: Vec<u32>,
        device_id: String,
        user: String,
        admin: bool,
        expires_at: u64,
        now: u64,
        edits: Vec<Edit>,
        events: bool,
    },
}

#[derive(Debug, Arbitrary)]
enum Edit {
    Set(u16, u8),
    Insert(u16, u8),
    Remove(u16),
    Truncate(u16),
}

fn apply(token: &str, edits: &[Edit]) -> String {
    let mut b = token.as_bytes().to_vec();
    for e in edits.iter().take(8) {
        let at = |i: u16, n: usize| usize::from(i) % (n + 1);
        match *e {
            Edit::Set(i, v) if !b.is_empty() => {
                let i = usize::from(i) % b.len();
                b[i] = v;
            }
            Edit::Insert(i, v) => {
                let i = at(i, b.len());
                b.insert(i, v);
            }
            Edit::Remove(i) if !b.is_empty() => {
                let i = usize::from(i) % b.len();
                b.remove(i);
            }
            Edit::Truncate(i) => {
                let i = at(i, b.len());
                b.truncate(i);
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// The broker's handshake checks on a decoded hello, in its order.
fn authenticate(hello: &Hello, now: u64) -> Result<(u32, String, bool), ()> {
    let version = negotiate(&hello.versions, SUPPORTED_VERSIONS);
    if let Ok(v) = version {
        let best = hello
            .versions
            .iter()
            .filter(|x| SUPPORTED_VERSIONS.contains(x))
            .max();
        assert_eq!(Some(&v), best, "negotiated {v}, not the highest common");
    } else {
        assert!(
            !hello
                .versions
                .iter()
                .any(|x| SUPPORTED_VERSIONS.contains(x)),
            "refused a common version"
        );
    }
    let version = version.map_err(|_| ())?;
    check_user_id("deviceId", &hello.device_id).map_err(|_| ())?;
    let claims = verify(SECRET, &hello.token, now).map_err(|_| ())?;
    assert!(now < claims.expires_at, "expired token accepted");
    assert!(
        check_user_id("user", &claims.user).is_ok(),
        "token with bad user id {:?} accepted",
        claims.user
    );
    Ok((version, claims.user, claims.admin))
}

fn round_trip(frame: &ClientFrame) {
    let bytes = frame_bytes(frame).expect("a hello encodes");
    let back: ClientFrame = decode_body(&bytes[HEADER_LEN..]).expect("a hello decodes");
    assert_eq!(&back, frame);
}

fuzz_target!(|input: Input| match input {
    Input::Raw(bytes) => {
        if let Ok(frame) = decode_body::<ClientFrame>(&bytes) {
            round_trip(&frame);
            if let ClientFrame::Hello(h) = frame {
                // Nobody without the secret gets in with bytes alone (a signature over
                // random text does not verify).
                if let Ok((_, user, _)) = authenticate(&h, 0) {
                    panic!("raw hello authenticated as {user:?}: {h:?}");
                }
            }
        }
    }
    Input::Minted {
        versions,
        device_id,
        user,
        admin,
        expires_at,
        now,
        edits,
        events,
    } => {
        let signed = mint(SECRET, &user, admin, expires_at);
        let token = apply(&signed, &edits);
        let hello = Hello {
            versions: versions.into_iter().take(16).collect(),
            token: token.clone(),
            device_id,
            events,
        };
        let frame = ClientFrame::Hello(hello.clone());
        round_trip(&frame);
        let genuine = token == signed;
        match authenticate(&hello, now) {
            Ok((_, u, a)) => {
                assert!(genuine, "altered token accepted: {signed:?} -> {token:?}");
                assert_eq!((u.as_str(), a), (user.as_str(), admin), "claims changed");
            }
            Err(()) => {
                let should_pass = genuine
                    && now < expires_at
                    && check_user_id("u", &user).is_ok()
                    && check_user_id("d", &hello.device_id).is_ok()
                    && negotiate(&hello.versions, SUPPORTED_VERSIONS).is_ok();
                assert!(
                    !should_pass,
                    "a genuine, valid hello was refused: {hello:?}"
                );
            }
        }
    }
});
