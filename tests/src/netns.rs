//! Nodes in Linux network namespaces, for partition tests (design 13.3): one namespace per
//! node with a veth pair into a bridge in the root namespace, where the test's clients
//! run, so clients reach every node through the bridge while the links *between nodes* can
//! be cut.
//!
//! This kernel has no iptables, nft or netem. What cuts a direction silently is a wrong
//! static neighbour entry in the sender's namespace (its frames for the peer go to a MAC
//! nobody has); deleting the entry heals at once. [`Netns::cut`] is one direction,
//! [`Netns::cut_both`] both.
//!
//! Every name (namespaces, bridge, veths) and the /24 subnet are unique per [`Netns`], so
//! tests run in parallel; everything is removed on drop, also when the test panics. Needs
//! root and `ip netns`: [`Netns::create`] returns `None` with a printed reason otherwise,
//! and the caller skips (a failure instead under `CONVOKE_REQUIRE_TOOLS=1`, as in CI).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where subnet claims live (one directory per claimed third octet, holding the owner pid).
const LOCK_DIR: &str = "/tmp/convoke-netns-subnets";

/// A MAC address nobody has: frames sent to it are lost.
const NOWHERE_MAC: &str = "02:00:00:00:00:99";

/// A set of per-node namespaces on one bridge, removed on drop.
#[derive(Debug)]
pub struct Netns {
    /// Unique tag of this set, in every name.
    tag: String,
    /// Third octet of the subnet `10.77.<octet>.0/24`.
    octet: u8,
    /// Nodes (1-based).
    n: usize,
    lock: PathBuf,
}

/// Why namespaces cannot be used here (`None`: they can).
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.as_deref() != Some("0") {
        return Some(format!(
            "not root (uid {})",
            uid.unwrap_or_else(|| "unknown".into())
        ));
    }
    match Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("`ip netns list` failed ({s})")),
        Err(e) => Some(format!("`ip` cannot run: {e}")),
    }
}

/// Runs `ip args...`; returns stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[track_caller]
fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Claims a free third octet (2..=250) for this process: an atomic `mkdir` per octet,
/// stale claims (their pid is gone) taken over.
fn claim_octet() -> (u8, PathBuf) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::fs::create_dir_all(LOCK_DIR).expect("the netns lock dir");
    let start = std::process::id().wrapping_mul(7) + NEXT.fetch_add(1, Ordering::Relaxed) * 13;
    for k in 0..249u32 {
        let octet = 2 + ((start + k) % 249) as u8;
        let dir = PathBuf::from(LOCK_DIR).join(octet.to_string());
        if std::fs::create_dir(&dir).is_err() {
            let owner = std::fs::read_to_string(dir.join("pid"))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok());
            match owner {
                Some(pid) if !pid_alive(pid) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    if std::fs::create_dir(&dir).is_err() {
                        continue;
                    }
                }
                _ => continue,
            }
        }
        std::fs::write(dir.join("pid"), std::process::id().to_string()).expect("claim");
        return (octet, dir);
    }
    panic!("no free 10.77.x.0/24 subnet in {LOCK_DIR}");
}

impl Netns {
    /// Creates `n` namespaces on a fresh bridge, or prints why it cannot and returns
    /// `None` (not root, no `ip netns`): the caller skips its test.
    pub fn create(n: usize, test: &str) -> Option<Netns> {
        if let Some(why) = unavailable() {
            // CI (root, iproute2) sets this: there a missing capability is a failure.
            if std::env::var("CONVOKE_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
                panic!("{test}: network namespaces are unavailable ({why}) and CONVOKE_REQUIRE_TOOLS=1");
            }
            eprintln!("SKIPPED {test}: network namespaces are unavailable: {why}");
            return None;
        }
        let (octet, lock) = claim_octet();
        // Interface names have at most 15 bytes: "cvb<tag>" and "cv<tag>h<i>" stay short.
        let tag = format!("{octet:x}{:x}", std::process::id() % 4096);
        let ns = Netns {
            tag,
            octet,
            n,
            lock,
        };
        // Leftovers of a killed earlier run with the same names.
        ns.remove();
        let br = ns.bridge();
        must(&["link", "add", &br, "type", "bridge"]);
        must(&["addr", "add", &format!("10.77.{octet}.254/24"), "dev", &br]);
        must(&["link", "set", &br, "up"]);
        for i in 1..=n {
            let name = ns.name(i);
            let (host, inner) = (ns.host_if(i), ns.inner_if(i));
            must(&["netns", "add", &name]);
            must(&["link", "add", &host, "type", "veth", "peer", "name", &inner]);
            must(&["link", "set", &inner, "netns", &name]);
            must(&["link", "set", &host, "master", &br]);
            must(&["link", "set", &host, "up"]);
            let addr = format!("{}/24", ns.ip(i));
            must(&["-n", &name, "addr", "add", &addr, "dev", &inner]);
            must(&["-n", &name, "link", "set", &inner, "up"]);
            must(&["-n", &name, "link", "set", "lo", "up"]);
        }
        Some(ns)
    }

    /// Node `i`'s namespace name.
    pub fn name(&self, i: usize) -> String {
        format!("cv{}-{i}", self.tag)
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.77.{}.{i}", self.octet)
    }

    /// The bridge's name.
    pub fn bridge(&self) -> String {
        format!("cvb{}", self.tag)
    }

    fn host_if(&self, i: usize) -> String {
        format!("cv{}h{i}", self.tag)
    }

    fn inner_if(&self, i: usize) -> String {
        format!("cv{}n{i}", self.tag)
    }

    /// Cuts the direction `from -> to` (node numbers): `from`'s frames for `to` go nowhere.
    pub fn cut(&self, from: usize, to: usize) {
        must(&[
            "-n",
            &self.name(from),
            "neigh",
            "replace",
            &self.ip(to),
            "lladdr",
            NOWHERE_MAC,
            "dev",
            &self.inner_if(from),
            "nud",
            "permanent",
        ]);
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(&self, a: usize, b: usize) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Heals the direction `from -> to` (no-op when it was not cut).
    pub fn heal(&self, from: usize, to: usize) {
        let _ = ip(&[
            "-n",
            &self.name(from),
            "neigh",
            "del",
            &self.ip(to),
            "dev",
            &self.inner_if(from),
        ]);
    }

    /// Heals every link between nodes.
    pub fn heal_all(&self) {
        for a in 1..=self.n {
            for b in 1..=self.n {
                if a != b {
                    self.heal(a, b);
                }
            }
        }
    }

    /// The command prefix that runs a program inside node `i`'s namespace.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.name(i)]
    }

    fn remove(&self) {
        for i in 1..=self.n {
            let _ = ip(&["netns", "del", &self.name(i)]);
            let _ = ip(&["link", "del", &self.host_if(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
        let _ = std::fs::remove_dir_all(&self.lock);
    }
}
