//! Separate network hosts on one machine, for tests of what crosses a network: each host is a
//! network namespace of the test's own, and all of them, plus this process's namespace, share
//! one Ethernet segment (a bridge in a namespace of its own). Nothing is routed and no setting
//! of the machine changes: the only thing outside the test's namespaces is the one virtual link
//! that gives this process an address on the segment, and dropping the [`Lab`] removes it with
//! the namespaces.
//!
//! ```text
//!   this process (gateway .1) ── bridge ── host 0 (.2), host 1 (.3), …
//! ```
//!
//! Creating namespaces needs root (as CI has); [`Lab::create`] says why it cannot, so a test
//! can skip with that reason.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

/// A segment with `hosts` namespaces on it. Dropped: every namespace and link is deleted.
#[derive(Debug)]
pub struct Lab {
    id: String,
    subnet: [u8; 3],
    hosts: usize,
}

fn ip(args: &[&str]) -> Result<(), String> {
    crate::run_command(
        Command::new("ip").args(args),
        &format!("`ip {}`", args.join(" ")),
    )
}

impl Lab {
    /// Makes the segment and `hosts` hosts on it, each with loopback up.
    pub fn create(hosts: usize) -> Result<Self, String> {
        let raw = uuid::Uuid::new_v4().simple().to_string();
        // Interface names have at most 15 bytes: `cl` + 6 hex + a role.
        let id = raw[..6].to_owned();
        let third = u8::from_str_radix(&raw[6..8], 16).unwrap_or(0);
        let lab = Self {
            id,
            subnet: [10, 213, third],
            hosts,
        };
        // From here on, a failure cleans up what was made (Drop).
        let bridge = lab.bridge_ns();
        ip(&["netns", "add", &bridge])?;
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        // This process's end.
        let gateway = lab.gateway_link();
        let peer = format!("{gateway}p");
        ip(&[
            "link", "add", &gateway, "type", "veth", "peer", "name", &peer,
        ])?;
        lab.plug(&peer)?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", lab.gateway()),
            "dev",
            &gateway,
        ])?;
        ip(&["link", "set", &gateway, "up"])?;
        for host in 0..hosts {
            let ns = lab.host(host);
            let link = format!("{ns}h");
            let peer = format!("{ns}p");
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &link, "netns", &ns])?;
            lab.plug(&peer)?;
            let address = format!("{}/24", lab.host_addr(host));
            ip(&["-n", &ns, "addr", "add", &address, "dev", &link])?;
            ip(&["-n", &ns, "link", "set", &link, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    /// Moves a link's end into the bridge's namespace and onto the bridge.
    fn plug(&self, link: &str) -> Result<(), String> {
        let bridge = self.bridge_ns();
        ip(&["link", "set", link, "netns", &bridge])?;
        ip(&["-n", &bridge, "link", "set", link, "master", "br0"])?;
        ip(&["-n", &bridge, "link", "set", link, "up"])
    }

    fn bridge_ns(&self) -> String {
        format!("cl{}br", self.id)
    }

    fn gateway_link(&self) -> String {
        format!("cl{}gw", self.id)
    }

    /// The namespace of host `i` (for `ip netns exec`).
    pub fn host(&self, i: usize) -> String {
        format!("cl{}h{i}", self.id)
    }

    /// Host `i`'s address on the segment.
    pub fn host_addr(&self, i: usize) -> IpAddr {
        let [a, b, c] = self.subnet;
        IpAddr::V4(Ipv4Addr::new(
            a,
            b,
            c,
            u8::try_from(i + 2).unwrap_or(u8::MAX),
        ))
    }

    /// This process's address on the segment: hosts reach what it serves there.
    pub fn gateway(&self) -> IpAddr {
        let [a, b, c] = self.subnet;
        IpAddr::V4(Ipv4Addr::new(a, b, c, 1))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the links in it, and with them their peers.
        for host in 0..self.hosts {
            let _ = ip(&["netns", "del", &self.host(host)]);
        }
        let _ = ip(&["netns", "del", &self.bridge_ns()]);
        let _ = ip(&["link", "del", &self.gateway_link()]);
    }
}
