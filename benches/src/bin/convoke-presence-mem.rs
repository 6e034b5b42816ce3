//! `convoke-presence-mem`: what a node's cluster presence directory (which users are online
//! on which other node, `convoke_broker::cluster::presence::Directory`) costs per user,
//! measured as the growth of a process's resident set while the directory is filled (so
//! malloc's headers and rounding, the hash tables' spare capacity and the tables freed when
//! they grew all count), beside the directory's own estimate (`approx_bytes`, what the unit
//! test `the_directory_costs_under_100_bytes_per_user` prints).
//!
//! Each case runs in a fresh child process: memory freed by one case would be reused by the
//! next and hide its cost. The user ids are built before the first sample, as a node holds
//! them in the deltas it receives, and not counted.
//!
//! ```sh
//! cargo run --release -p convoke-benches --bin convoke-presence-mem -- 100000
//! ```

use anyhow::Context as _;
use convoke_broker::cluster::presence::Directory;

/// This process's resident set, bytes.
fn rss() -> anyhow::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kb * 1024)
}

/// The cases: (name, how many of the users this node's peers hold, and which).
const CASES: [&str; 2] = [
    "all on n2, half also on n3",
    "a third on each of n1, n2, n3 (seen from n1)",
];

/// Runs case `case` with `users` ids of `id_len` bytes and prints its table row.
fn run_case(users: usize, id_len: usize, case: usize) -> anyhow::Result<()> {
    let ids: Vec<String> = (0..users).map(|i| format!("{i:0id_len$}")).collect();
    let third = users / 3;
    let on: Vec<(&str, &[String])> = if case == 0 {
        // The unit test's case: every user online on n2, half of them also on n3.
        vec![("n2", &ids[..]), ("n3", &ids[..users / 2])]
    } else {
        // 3 nodes, the users spread evenly: n1 knows the two thirds on n2 and n3.
        vec![("n2", &ids[third..2 * third]), ("n3", &ids[2 * third..])]
    };
    let before = rss()?;
    let d = Directory::default();
    for (peer, u) in &on {
        d.online(peer, u.iter());
    }
    let grown = rss()?.saturating_sub(before) as f64;
    let per = users.max(1) as f64;
    println!(
        "| {id_len}-byte ids: {} | {users} | {} | {:.0} | {:.1} | {:.1} | {:.1} |",
        CASES[case],
        d.len(),
        grown,
        grown / per,
        grown / d.len().max(1) as f64,
        d.approx_bytes() as f64 / per,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let users: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    if let (Some(id_len), Some(case)) = (args.get(2), args.get(3)) {
        return run_case(users, id_len.parse()?, case.parse()?);
    }
    println!(
        "| case | online users | in this node's directory | RSS growth, bytes | per online user | per directory entry | approx_bytes per online user |"
    );
    println!("|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe()?;
    for id_len in [8usize, 20] {
        for case in 0..CASES.len() {
            let status = std::process::Command::new(&exe)
                .args([users.to_string(), id_len.to_string(), case.to_string()])
                .status()?;
            anyhow::ensure!(status.success(), "case {case} ({id_len}-byte ids) failed");
        }
    }
    Ok(())
}
