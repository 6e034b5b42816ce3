//! The cases: the types' own `examples()` plus edge cases (empty, long, unicode and
//! BOM-led strings, `__proto__` and integer-like map keys, varint boundaries, u64 ids past
//! 2^53, negative i64), named for the fixture files.

use super::json::J;
use super::json::JS_SAFE;
use super::render::{detail, response};
use super::Coverage;
use convoke_protocol::event::{EventDetail, GroupEvent, GroupEventOp, GroupMessage, Push};
use convoke_protocol::handshake::{
    ClientFrame, Hello, ServerFrame, Welcome, PROTOCOL_VERSION, SUPPORTED_VERSIONS,
};
use convoke_protocol::request::{CreateGroupData, Request};
use convoke_protocol::response::{
    GroupInfo, GroupInfoEntry, JoinedGroup, MemberEntry, MuteEntry, ReadUser, Response, Role,
    SharedFile,
};
use convoke_protocol::transfer::{TransferHeader, TransferReply};
use convoke_protocol::{close, ApiError, ErrorCode};
use std::collections::BTreeMap;

/// Strings that exercise the codec: empty, unicode (2-, 3- and 4-byte UTF-8), a leading
/// byte-order mark (a UTF-8 decoder strips it unless told not to), escapes and NUL, and a
/// length past the one-byte varint (300 bytes: the 251 + u16 form).
pub(crate) fn odd_strings() -> Vec<String> {
    vec![
        String::new(),
        "héllo wörld 世界 🎉".to_string(),
        "\u{feff}bom first".to_string(),
        "quote\" back\\slash\nnew\ttab\u{0}nul\u{1f}".to_string(),
        "x".repeat(300),
    ]
}

/// u64 values at the varint boundaries and past what a JS number holds.
pub(crate) const U64S: [u64; 9] = [
    0,
    250,
    251,
    65_535,
    65_536,
    u32::MAX as u64,
    u32::MAX as u64 + 1,
    (1 << 53) + 1,
    u64::MAX,
];

/// i64 values: zigzag boundaries (125 -> 250, -126 -> 251) and the JS-safe extremes.
pub(crate) const I64S: [i64; 9] = [
    0,
    -1,
    1,
    125,
    -126,
    1_700_000_000_000,
    JS_SAFE,
    -JS_SAFE,
    -2,
];

/// Named values of one wire type.
pub(crate) type Cases<T> = Vec<(String, T)>;

pub(crate) fn extra_requests() -> Vec<Request> {
    let g = "18446744073709551615".to_string();
    let [empty, uni, bom, esc, long] = <[String; 5]>::try_from(odd_strings()).unwrap();
    let mut out = vec![];
    for nonce in U64S {
        out.push(Request::Ping { nonce });
    }
    out.push(Request::CreateGroup {
        data: CreateGroupData {
            groupname: uni.clone(),
            desc: empty.clone(),
            members: vec![],
            public: false,
            approval: true,
            allowinvites: false,
            invite_need_confirm: true,
            maxusers: None,
            // The contract's largest ext (8 KiB), with multi-byte characters.
            ext: format!("{{\"k\":\"{}\"}}", "é".repeat(4092)),
        },
    });
    out.push(Request::GetGroupInfo { group_ids: vec![] });
    out.push(Request::ModifyGroup {
        group_id: g.clone(),
        group_name: None,
        description: None,
        ext: None,
    });
    out.push(Request::ModifyGroup {
        group_id: g.clone(),
        group_name: Some(empty.clone()),
        description: Some(esc.clone()),
        ext: Some(long.clone()),
    });
    out.push(Request::ListGroupMembers {
        group_id: g.clone(),
        page_num: u32::MAX,
        page_size: 65_536,
    });
    for mute_duration in I64S {
        out.push(Request::MuteGroupMember {
            group_id: g.clone(),
            username: vec![uni.clone(), empty.clone()],
            mute_duration,
        });
    }
    out.push(Request::SetGroupMemberAttributes {
        group_id: g.clone(),
        user_id: bom.clone(),
        // "__proto__" is a legal key and must stay a key in JS; "10" sorts before "9" on
        // the wire (byte order), after it in a JS object (integer-like keys first).
        member_attributes: [
            ("__proto__".to_string(), "p".to_string()),
            ("10".to_string(), uni.clone()),
            ("9".to_string(), empty.clone()),
            ("constructor".to_string(), esc.clone()),
        ]
        .into(),
    });
    out.push(Request::SetGroupMemberAttributes {
        group_id: g.clone(),
        user_id: empty.clone(),
        member_attributes: BTreeMap::new(),
    });
    out.push(Request::GetGroupMembersAttributes {
        group_id: g.clone(),
        user_ids: vec![],
        keys: vec![],
    });
    out.push(Request::GetJoinedGroups {
        page_num: 0,
        page_size: u32::MAX,
        need_affiliations: false,
        need_role: true,
    });
    out.push(Request::GetPublicGroups {
        limit: 251,
        cursor: None,
    });
    out.push(Request::GetGroupMsgReadUser {
        group_id: g.clone(),
        msg_id: long.clone(),
        limit: 250,
        cursor: Some(empty.clone()),
    });
    out.push(Request::SendGroupMessage {
        group_id: g.clone(),
        payload: (0..=255).collect(),
        allow_group_ack: false,
        client_msg_id: None,
    });
    out.push(Request::SendGroupMessage {
        group_id: g.clone(),
        payload: vec![],
        allow_group_ack: true,
        client_msg_id: Some(uni.clone()),
    });
    out.push(Request::GetGroupMessages {
        group_id: g.clone(),
        before: Some(u64::MAX),
        after: Some(0),
        limit: 0,
    });
    out.push(Request::GetGroupMessages {
        group_id: g,
        before: None,
        after: None,
        limit: 65_535,
    });
    out
}

pub(crate) fn client_frames() -> Vec<(String, ClientFrame)> {
    let mut out = vec![];
    let requests = Request::examples().into_iter().chain(extra_requests());
    for (i, request) in requests.enumerate() {
        let id = U64S[i % U64S.len()];
        let name = format!("request.{}", request.method());
        out.push((name, ClientFrame::Request { id, request }));
    }
    out
}

pub(crate) fn handshake_frames() -> (Cases<ClientFrame>, Cases<ServerFrame>) {
    let [empty, uni, _, esc, long] = <[String; 5]>::try_from(odd_strings()).unwrap();
    let client = vec![
        (
            "hello".to_string(),
            ClientFrame::Hello(Hello {
                versions: SUPPORTED_VERSIONS.to_vec(),
                token: "v1.alice.1700000000.c2lnbmF0dXJl".into(),
                device_id: "laptop-1".into(),
                events: true,
            }),
        ),
        (
            "hello.edges".to_string(),
            ClientFrame::Hello(Hello {
                versions: vec![0, 1, 250, 251, 65_536, u32::MAX],
                token: long,
                device_id: uni.clone(),
                events: false,
            }),
        ),
        (
            "hello.empty".to_string(),
            ClientFrame::Hello(Hello {
                versions: vec![],
                token: empty.clone(),
                device_id: empty.clone(),
                events: false,
            }),
        ),
        ("ack.empty".to_string(), ClientFrame::Ack { ids: vec![] }),
        ("ack".to_string(), ClientFrame::Ack { ids: U64S.to_vec() }),
    ];
    let mut server = vec![
        (
            "welcome".to_string(),
            ServerFrame::Welcome(Welcome {
                version: PROTOCOL_VERSION,
                user_id: "alice".into(),
                app_admin: false,
                session_id: u64::MAX,
                server_time: 1_700_000_000_123,
            }),
        ),
        (
            "welcome.edges".to_string(),
            ServerFrame::Welcome(Welcome {
                version: u32::MAX,
                user_id: uni.clone(),
                app_admin: true,
                session_id: 0,
                server_time: -JS_SAFE,
            }),
        ),
    ];
    for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
        let message = [&uni, &esc, &empty][i % 3].clone();
        server.push((
            format!("refused.{}", code.name()),
            ServerFrame::Refused(ApiError::new(code, message)),
        ));
    }
    (client, server)
}

pub(crate) fn extra_responses() -> Vec<Response> {
    let [empty, uni, bom, esc, long] = <[String; 5]>::try_from(odd_strings()).unwrap();
    let info = GroupInfo {
        id: "18446744073709551615".into(),
        name: uni.clone(),
        description: long.clone(),
        owner: bom.clone(),
        created: -JS_SAFE,
        affiliations_count: u32::MAX,
        maxusers: 100_000,
        public: false,
        membersonly: true,
        allowinvites: false,
        invite_need_confirm: false,
        mute: true,
        custom: esc.clone(),
        shieldgroup: true,
        role: None,
    };
    let file = SharedFile {
        file_id: "9007199254740993".into(),
        file_name: uni.clone(),
        file_owner: empty.clone(),
        file_size: u64::MAX,
        created: JS_SAFE,
        content_type: empty.clone(),
        sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        secret: bom.clone(),
    };
    let mut admin_info = info.clone();
    admin_info.role = Some(Role::Admin);
    let mut member_info = info.clone();
    member_info.role = Some(Role::Member);
    vec![
        Response::Pong {
            nonce: u64::MAX,
            server_time: -1,
        },
        Response::GroupInfos { groups: vec![] },
        Response::GroupInfos {
            groups: vec![
                GroupInfoEntry {
                    group_id: empty.clone(),
                    info: Some(info),
                    error: None,
                },
                GroupInfoEntry {
                    group_id: "1".into(),
                    info: Some(admin_info),
                    error: None,
                },
                GroupInfoEntry {
                    group_id: "2".into(),
                    info: Some(member_info),
                    error: None,
                },
                GroupInfoEntry {
                    group_id: "x".into(),
                    info: None,
                    error: Some(ApiError::param(uni.clone())),
                },
            ],
        },
        Response::Members {
            members: vec![
                MemberEntry {
                    user_id: "o".into(),
                    role: Role::Owner,
                    joined_at: 0,
                },
                MemberEntry {
                    user_id: "a".into(),
                    role: Role::Admin,
                    joined_at: -126,
                },
            ],
        },
        Response::Invited {
            pending: vec![],
            joined: vec![uni.clone(), long.clone()],
        },
        Response::JoinResult { joined: false },
        Response::Mutes { mutes: vec![] },
        Response::Bool { value: false },
        Response::Announcement {
            announcement: empty.clone(),
        },
        Response::Files {
            files: vec![file.clone()],
        },
        Response::Attributes {
            attributes: BTreeMap::new(),
        },
        Response::MembersAttributes {
            members: [
                ("__proto__".to_string(), BTreeMap::new()),
                (
                    uni.clone(),
                    [
                        ("10".to_string(), esc.clone()),
                        ("9".to_string(), String::new()),
                    ]
                    .into(),
                ),
            ]
            .into(),
        },
        Response::JoinedGroups {
            groups: vec![
                JoinedGroup {
                    group_id: "1".into(),
                    group_name: empty.clone(),
                    affiliations_count: None,
                    role: Some(Role::Admin),
                },
                JoinedGroup {
                    group_id: "2".into(),
                    group_name: uni.clone(),
                    affiliations_count: Some(0),
                    role: Some(Role::Member),
                },
            ],
        },
        Response::PublicGroups {
            groups: vec![],
            cursor: None,
        },
        Response::ReadUsers {
            total: u32::MAX,
            users: vec![ReadUser {
                user_id: bom.clone(),
                read_at: JS_SAFE,
            }],
            cursor: Some(long.clone()),
        },
        Response::MessageSent {
            msg_id: "9007199254740993".into(),
            seq: u64::MAX,
            timestamp: -JS_SAFE,
        },
        Response::Messages { messages: vec![] },
        Response::Messages {
            messages: vec![GroupMessage {
                group_id: uni.clone(),
                msg_id: empty.clone(),
                seq: (1 << 53) + 1,
                from: esc,
                payload: (0..=255).rev().collect(),
                timestamp: 125,
                allow_group_ack: true,
            }],
        },
        Response::MutesPage {
            mutes: vec![
                MuteEntry {
                    user: uni,
                    expire: -1,
                },
                MuteEntry {
                    user: empty,
                    expire: JS_SAFE,
                },
            ],
            cursor: None,
        },
        Response::UsersPage {
            users: vec![],
            cursor: Some(long),
        },
    ]
}

pub(crate) fn response_frames() -> Vec<(String, ServerFrame)> {
    let mut out = vec![];
    let responses = Response::examples().into_iter().chain(extra_responses());
    for (i, response) in responses.enumerate() {
        let id = U64S[i % U64S.len()];
        let name = format!(
            "response.{}",
            response_name(&response, &mut Coverage::default())
        );
        out.push((
            name,
            ServerFrame::Response {
                id,
                result: Ok(response),
            },
        ));
    }
    for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
        out.push((
            format!("response.err.{}", code.name()),
            ServerFrame::Response {
                id: U64S[i % U64S.len()],
                result: Err(ApiError::new(code, format!("{} says no: ✗", code.name()))),
            },
        ));
    }
    out
}

pub(crate) fn response_name(r: &Response, cov: &mut Coverage) -> String {
    match response(r, cov) {
        J::Obj(fields) => match &fields[0].1 {
            J::Str(name) => name.clone(),
            other => panic!("tag is not a string: {other:?}"),
        },
        other => panic!("not an object: {other:?}"),
    }
}

pub(crate) fn pushes() -> Vec<(String, Push)> {
    let [empty, uni, bom, esc, long] = <[String; 5]>::try_from(odd_strings()).unwrap();
    let mut all = Push::examples();
    let event = |detail: EventDetail, timestamp: i64| GroupEvent {
        operation: GroupEventOp::UpdateInfo,
        group_id: "18446744073709551615".into(),
        group_name: uni.clone(),
        from: bom.clone(),
        users: vec![empty.clone(), long.clone()],
        detail,
        timestamp,
    };
    for (i, t) in I64S.into_iter().enumerate() {
        let detail = match i % 5 {
            0 => EventDetail::Text { text: esc.clone() },
            1 => EventDetail::Mute { expire: t },
            2 => EventDetail::Updated {
                group_name: Some(empty.clone()),
                description: Some(uni.clone()),
                ext: Some(long.clone()),
            },
            3 => EventDetail::Attributes {
                user_id: empty.clone(),
                attributes: [
                    ("__proto__".to_string(), String::new()),
                    ("10".to_string(), "ten".to_string()),
                    ("9".to_string(), uni.clone()),
                ]
                .into(),
            },
            _ => EventDetail::None,
        };
        all.push(Push::Group(event(detail, t)));
    }
    all.push(Push::Kept {
        id: 0,
        event: event(EventDetail::NewOwner { owner: esc.clone() }, -1),
    });
    all.push(Push::Kept {
        id: (1 << 53) + 1,
        event: event(
            EventDetail::FileId {
                file_id: long.clone(),
            },
            0,
        ),
    });
    all.push(Push::Message(GroupMessage {
        group_id: "1".into(),
        msg_id: "18446744073709551615".into(),
        seq: 0,
        from: uni.clone(),
        payload: vec![],
        timestamp: -JS_SAFE,
        allow_group_ack: true,
    }));
    all.push(Push::Closing {
        code: u32::MAX,
        reason: uni.clone(),
    });
    all.push(Push::Closing {
        code: close::NORMAL,
        reason: empty.clone(),
    });
    all.into_iter()
        .map(|p| {
            let name = match &p {
                Push::Group(e) => format!("group.{}.{}", e.operation, detail_name(&e.detail)),
                Push::MultiDevice(e) => {
                    format!("multiDevice.{}.{}", e.operation, detail_name(&e.detail))
                }
                Push::Message(_) => "message".to_string(),
                Push::Closing { .. } => "closing".to_string(),
                Push::Kept { event, .. } => format!("kept.{}", event.operation),
            };
            (name, p)
        })
        .collect()
}

pub(crate) fn detail_name(d: &EventDetail) -> String {
    match detail(d, &mut Coverage::default()) {
        J::Obj(fields) => match &fields[0].1 {
            J::Str(name) => name.clone(),
            other => panic!("tag is not a string: {other:?}"),
        },
        other => panic!("not an object: {other:?}"),
    }
}

pub(crate) fn transfers() -> (Cases<TransferHeader>, Cases<TransferReply>) {
    let [empty, uni, _, esc, long] = <[String; 5]>::try_from(odd_strings()).unwrap();
    let headers = vec![
        (
            "upload".to_string(),
            TransferHeader::Upload {
                group_id: "1234567".into(),
                file_name: "notes.txt".into(),
                size: 10 * 1024 * 1024,
                content_type: "text/plain".into(),
                upload_id: u64::MAX,
                resume: false,
            },
        ),
        (
            "upload.resume".to_string(),
            TransferHeader::Upload {
                group_id: empty.clone(),
                file_name: uni.clone(),
                size: 0,
                content_type: esc.clone(),
                upload_id: (1 << 53) + 1,
                resume: true,
            },
        ),
        (
            "download".to_string(),
            TransferHeader::Download {
                group_id: "1234567".into(),
                file_id: "77".into(),
                secret: None,
                offset: 0,
            },
        ),
        (
            "download.secret".to_string(),
            TransferHeader::Download {
                group_id: uni.clone(),
                file_id: "18446744073709551615".into(),
                secret: Some(long),
                offset: u64::MAX,
            },
        ),
    ];
    let file = SharedFile {
        file_id: "1".into(),
        file_name: uni.clone(),
        file_owner: "alice".into(),
        file_size: 10 * 1024 * 1024,
        created: 1_700_000_000_000,
        content_type: "application/octet-stream".into(),
        sha256: "00".repeat(32),
        secret: "s3cr3t".into(),
    };
    let replies = vec![
        ("outcome.ok".to_string(), TransferReply::Outcome(Ok(file))),
        (
            "outcome.err".to_string(),
            TransferReply::Outcome(Err(ApiError::new(ErrorCode::UploadFileError, uni))),
        ),
        (
            "resumeAt.0".to_string(),
            TransferReply::ResumeAt { offset: 0 },
        ),
        (
            "resumeAt.max".to_string(),
            TransferReply::ResumeAt { offset: u64::MAX },
        ),
        (
            "resumeAt.boundary".to_string(),
            TransferReply::ResumeAt { offset: 65_536 },
        ),
    ];
    (headers, replies)
}
