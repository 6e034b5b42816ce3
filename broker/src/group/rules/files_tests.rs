//! The shared-file rules without a runtime.

use super::*;
use crate::group::model::{GroupMeta, MemberRec};
use convoke_protocol::{Push, Role};

const LIMITS: FileLimits = FileLimits {
    max_file_bytes: 100,
    max_files_per_group: 3,
};

fn who(user: &str) -> Caller {
    Caller {
        user: user.into(),
        app_admin: user == "aa",
        session_id: 1,
    }
}

/// owner, admin "adm", members m1 and m2.
fn group() -> Group {
    let meta = GroupMeta {
        name: "g".into(),
        description: String::new(),
        owner: "owner".into(),
        created: 1,
        maxusers: 200,
        public: false,
        membersonly: false,
        allowinvites: false,
        invite_need_confirm: true,
        mute_all: false,
        ext: String::new(),
        announcement: String::new(),
        member_count: 0,
    };
    let mut g = Group::new(42, meta);
    g.insert_member("owner", MemberRec::new(Role::Owner, 1));
    g.insert_member("adm", MemberRec::new(Role::Admin, 1));
    g.insert_member("m1", MemberRec::new(Role::Member, 1));
    g.insert_member("m2", MemberRec::new(Role::Member, 1));
    g
}

fn rec(owner: &str, size: u64) -> FileRec {
    FileRec {
        name: "a.bin".into(),
        owner: owner.into(),
        size,
        created: 5,
        content_type: "application/octet-stream".into(),
        sha256: "00".into(),
        secret: "s3cret".into(),
    }
}

fn upload(g: &mut Group, user: &str, id: u64) -> (SharedFile, Effects) {
    let op = FileOp::Record {
        file_id: id,
        rec: rec(user, 10),
    };
    match apply_op(g, &who(user), op, &LIMITS, 9).expect("record") {
        (FileReply::Recorded(f), Some(fx)) => (f, fx),
        other => panic!("unexpected {other:?}"),
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, ApiError>) -> i32 {
    r.expect_err("should fail").code.code()
}

fn admit(g: &mut Group, user: &str, file_id: u64, size: u64) -> Result<FileReply, ApiError> {
    apply_op(g, &who(user), FileOp::Admit { file_id, size }, &LIMITS, 9).map(|(r, fx)| {
        assert!(fx.is_none(), "admission commits nothing");
        r
    })
}

#[test]
fn admission_checks_membership_size_and_quota() {
    let mut g = group();
    assert_eq!(admit(&mut g, "m1", 100, 100), Ok(FileReply::Admitted));
    apply_op(
        &mut g,
        &who("m1"),
        FileOp::Release { file_id: 100 },
        &LIMITS,
        9,
    )
    .unwrap();
    let before = g.clone();
    assert_eq!(code(admit(&mut g, "out", 101, 1)), 602);
    let e = admit(&mut g, "m1", 101, 101).expect_err("too big");
    assert_eq!(e.code, ErrorCode::UploadFileError);
    assert!(
        e.message.contains("101") && e.message.contains("100"),
        "{e}"
    );
    assert_eq!(g, before, "a refused admission holds no place");
    for id in 1..=3 {
        upload(&mut g, "m1", id);
    }
    let e = admit(&mut g, "m1", 102, 1).expect_err("full");
    assert_eq!(e.code, ErrorCode::MaxLimit);
    assert!(e.message.contains('3'), "{e}");
}

#[test]
fn an_upload_in_progress_holds_its_place_until_recorded_or_released() {
    let mut g = group();
    upload(&mut g, "m1", 1);
    // Quota 3, one file: two uploads may start, a third may not, before any byte.
    assert_eq!(admit(&mut g, "m1", 10, 1), Ok(FileReply::Admitted));
    assert_eq!(admit(&mut g, "m2", 11, 1), Ok(FileReply::Admitted));
    let e = admit(&mut g, "adm", 12, 1).expect_err("places all held");
    assert_eq!(e.code, ErrorCode::MaxLimit);
    assert!(e.message.contains("2 more being uploaded"), "{e}");
    // A failed upload gives its place back; a recorded one turns it into a file.
    let release = FileOp::Release { file_id: 11 };
    assert_eq!(
        apply_op(&mut g, &who("m2"), release, &LIMITS, 9).unwrap(),
        (FileReply::Released, None)
    );
    assert_eq!(admit(&mut g, "adm", 12, 1), Ok(FileReply::Admitted));
    upload(&mut g, "m1", 10);
    assert_eq!(g.files.len(), 2);
    assert_eq!(g.uploading.iter().copied().collect::<Vec<_>>(), vec![12]);
    assert_eq!(
        admit(&mut g, "m1", 13, 1).expect_err("full").code,
        ErrorCode::MaxLimit
    );
    // An upload whose record is refused is over too: its place is free again.
    let op = FileOp::Record {
        file_id: 12,
        rec: rec("out", 1),
    };
    assert_eq!(code(apply_op(&mut g, &who("out"), op, &LIMITS, 9)), 602);
    assert!(g.uploading.is_empty());
    assert_eq!(admit(&mut g, "m1", 13, 1), Ok(FileReply::Admitted));
}

#[test]
fn record_announces_to_members_and_rechecks() {
    let mut g = group();
    let (file, fx) = upload(&mut g, "m1", 7);
    assert_eq!(file.file_id, "7");
    assert_eq!(file.file_owner, "m1");
    assert_eq!(fx.dirty, vec![Dirty::File(7)]);
    let a = &fx.announce[0];
    assert_eq!(a.to, vec!["adm", "m1", "m2", "owner"]);
    assert!(!a.keep_offline);
    match &a.push {
        Push::Group(ev) => {
            assert_eq!(ev.operation, Op::UploadFile);
            assert_eq!(ev.detail, EventDetail::File { file });
        }
        other => panic!("{other:?}"),
    }
    // A user removed during the upload cannot record it.
    let before = g.clone();
    let op = FileOp::Record {
        file_id: 8,
        rec: rec("out", 1),
    };
    assert_eq!(code(apply_op(&mut g, &who("out"), op, &LIMITS, 9)), 602);
    assert_eq!(g, before);
}

#[test]
fn fetch_needs_membership_a_known_id_and_the_right_secret_if_any() {
    let mut g = group();
    upload(&mut g, "m1", 7);
    let fetch = |g: &mut Group, user: &str, id: &str, secret: Option<&str>| {
        let op = FileOp::Fetch {
            file_id: id.into(),
            secret: secret.map(str::to_string),
        };
        apply_op(g, &who(user), op, &LIMITS, 9).map(|(r, _)| r)
    };
    assert!(matches!(
        fetch(&mut g, "m2", "7", None),
        Ok(FileReply::Found { file_id: 7, .. })
    ));
    assert!(fetch(&mut g, "m2", "7", Some("s3cret")).is_ok());
    assert!(fetch(&mut g, "aa", "7", None).is_ok(), "app admin");
    assert_eq!(code(fetch(&mut g, "out", "7", Some("s3cret"))), 602);
    let e = fetch(&mut g, "m2", "8", None).expect_err("unknown");
    assert_eq!(e.code, ErrorCode::DownloadFileError);
    assert!(e.message.contains("\"8\""), "{e}");
    assert_eq!(code(fetch(&mut g, "m2", "x7", None)), 200);
    assert_eq!(code(fetch(&mut g, "m2", "7", Some("s3creT"))), 200);
}

#[test]
fn list_is_newest_first_and_checks_its_page() {
    let mut g = group();
    let limits = FileLimits {
        max_files_per_group: 100,
        ..LIMITS
    };
    for id in 1..=12 {
        let op = FileOp::Record {
            file_id: id,
            rec: rec("m1", 1),
        };
        apply_op(&mut g, &who("m1"), op, &limits, 9).expect("record");
    }
    let ids = |page, size| match list(&g, &who("m2"), page, size).expect("list").response {
        Response::Files { files } => files.into_iter().map(|f| f.file_id).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(ids(1, 5), ["12", "11", "10", "9", "8"]);
    assert_eq!(ids(3, 5), ["2", "1"]);
    assert_eq!(ids(2, 10), ["2", "1"]);
    assert!(ids(4, 5).is_empty());
    assert!(ids(u32::MAX, 10).is_empty());
    assert_eq!(code(list(&g, &who("m2"), 0, 5)), -3);
    assert_eq!(code(list(&g, &who("m2"), 1, 0)), -3);
    assert_eq!(code(list(&g, &who("m2"), 1, 11)), -3);
    assert_eq!(code(list(&g, &who("out"), 1, 5)), 602);
}

#[test]
fn delete_permissions_and_event() {
    let mut g = group();
    upload(&mut g, "m1", 1);
    upload(&mut g, "m2", 2);
    let before = g.clone();
    assert_eq!(code(delete(&mut g, &who("m1"), "2", 9)), 603);
    assert_eq!(code(delete(&mut g, &who("out"), "2", 9)), 602);
    assert_eq!(code(delete(&mut g, &who("m1"), "3", 9)), 200);
    assert_eq!(g, before);
    let fx = delete(&mut g, &who("m1"), "1", 9).expect("own file");
    assert_eq!(fx.dirty, vec![Dirty::File(1)]);
    match &fx.announce[0].push {
        Push::Group(ev) => {
            assert_eq!(ev.operation, Op::DeleteFile);
            assert_eq!(
                ev.detail,
                EventDetail::FileId {
                    file_id: "1".into()
                }
            );
        }
        other => panic!("{other:?}"),
    }
    delete(&mut g, &who("adm"), "2", 9).expect("admin deletes any file");
    assert!(g.files.is_empty());
}
