//! One node's view of a Redis Cluster, read from `CLUSTER NODES`.
//!
//! `CLUSTER NODES` is what `CLUSTER SLOTS` and `CLUSTER SHARDS` are computed from, and unlike them it also lists
//! failed nodes, link states and half-done slot migrations, which is what telling "settled" from "still moving"
//! needs. [`Topology::shape`] drops what legitimately differs between observers (the `myself` flag, ping times),
//! so two nodes agree on the cluster exactly when their shapes are equal.

use std::ops::RangeInclusive;

/// All 16384 hash slots of a Redis Cluster.
pub const SLOTS: u32 = 16384;

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub port: u16,
    /// `master` in the flags (a primary, even one that holds no slot).
    pub primary: bool,
    /// For a replica: the id of its primary.
    pub primary_id: Option<String>,
    pub slots: Vec<RangeInclusive<u16>>,
    /// The raw flags: `myself`, `master`, `slave`, `fail?`, `fail`, `handshake`, `noaddr`, …
    pub flags: Vec<String>,
    /// The cluster bus link is `connected`.
    pub connected: bool,
    /// Slots the observing node is importing or migrating (only listed on its own line).
    pub open_slots: Vec<String>,
}

impl NodeView {
    /// Marked failing (`fail?`) or failed (`fail`), or not yet known by address.
    pub fn failing(&self) -> bool {
        self.flags
            .iter()
            .any(|f| matches!(f.as_str(), "fail" | "fail?" | "handshake" | "noaddr"))
    }

    pub fn slot_count(&self) -> u32 {
        self.slots
            .iter()
            .map(|r| u32::from(*r.end()) - u32::from(*r.start()) + 1)
            .sum()
    }

    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|r| r.contains(&slot))
    }
}

/// The cluster as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub nodes: Vec<NodeView>,
}

/// What must be equal between two observers that agree: per node (by port), its role, its primary's port and its
/// slots.
pub type Shape = Vec<(u16, bool, Option<u16>, Vec<RangeInclusive<u16>>)>;

impl Topology {
    /// Parses the reply of `CLUSTER NODES`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let nodes = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(parse_line)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { nodes })
    }

    pub fn node(&self, port: u16) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.port == port)
    }

    pub fn by_id(&self, id: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The primary that serves `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.primary && n.owns(slot))
    }

    pub fn primaries(&self) -> Vec<&NodeView> {
        self.nodes.iter().filter(|n| n.primary).collect()
    }

    pub fn replicas(&self) -> Vec<&NodeView> {
        self.nodes.iter().filter(|n| !n.primary).collect()
    }

    /// Slots held by some primary.
    pub fn covered(&self) -> u32 {
        self.primaries().iter().map(|n| n.slot_count()).sum()
    }

    pub fn shape(&self) -> Shape {
        let mut shape: Shape = self
            .nodes
            .iter()
            .map(|n| {
                let primary_port = n
                    .primary_id
                    .as_deref()
                    .and_then(|id| self.by_id(id))
                    .map(|p| p.port);
                let mut slots = n.slots.clone();
                slots.sort_by_key(|r| *r.start());
                (n.port, n.primary, primary_port, slots)
            })
            .collect();
        shape.sort_by_key(|entry| entry.0);
        shape
    }
}

/// `<id> <ip:port@cport[,hostname]> <flags> <primary> <ping-sent> <pong-recv> <epoch> <link> <slot>...`
fn parse_line(line: &str) -> Result<NodeView, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return Err(format!("short CLUSTER NODES line: {line}"));
    }
    let address = fields[1].split(['@', ',']).next().unwrap_or_default();
    let port = address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| format!("no port in CLUSTER NODES line: {line}"))?;
    let flags: Vec<String> = fields[2].split(',').map(str::to_string).collect();
    let primary = flags.iter().any(|f| f == "master");
    let primary_id = (fields[3] != "-").then(|| fields[3].to_string());
    let mut slots = Vec::new();
    let mut open_slots = Vec::new();
    for token in &fields[8..] {
        if token.starts_with('[') {
            open_slots.push(token.to_string());
            continue;
        }
        let (start, end) = token.split_once('-').unwrap_or((token, token));
        match (start.parse::<u16>(), end.parse::<u16>()) {
            (Ok(start), Ok(end)) => slots.push(start..=end),
            _ => return Err(format!("bad slot {token:?} in CLUSTER NODES line: {line}")),
        }
    }
    Ok(NodeView {
        id: fields[0].to_string(),
        port,
        primary,
        primary_id,
        slots,
        flags,
        connected: fields[7] == "connected",
        open_slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
f0dfd2 127.0.0.1:27003@37003 master - 0 1796142039091 3 connected 10923-16383
c46fef 127.0.0.1:27006@37006 slave f0dfd2 0 1796142039091 3 connected
555526 127.0.0.1:27005@37005 slave 98284e 0 1796142039394 2 connected
242ec6 127.0.0.1:27004@37004 master,fail - 0 1796142039394 1 disconnected
98284e 127.0.0.1:27002@37002 master - 0 1796142039394 2 connected 5461-10922
e47e12 127.0.0.1:27001@37001,host myself,master - 0 0 7 connected 0-5460 [77->-f0dfd2]
";

    #[test]
    fn reads_roles_slots_failures_and_open_slots() {
        let t = Topology::parse(SAMPLE).expect("parses");
        assert_eq!(t.nodes.len(), 6);
        assert_eq!(t.covered(), SLOTS);
        assert_eq!(t.owner(0).map(|n| n.port), Some(27001));
        assert_eq!(t.owner(16383).map(|n| n.port), Some(27003));
        let failed = t.node(27004).expect("27004");
        assert!(failed.primary && failed.failing() && !failed.connected);
        assert_eq!(t.node(27001).map(|n| n.open_slots.len()), Some(1));
        let shape = t.shape();
        assert_eq!(shape[5], (27006, false, Some(27003), vec![]));
    }

    #[test]
    fn observers_that_differ_only_in_myself_and_pings_have_one_shape() {
        let other = SAMPLE
            .replace("myself,master - 0 0 7", "master - 0 1796142039999 7")
            .replace(
                "c46fef 127.0.0.1:27006@37006 slave",
                "c46fef 127.0.0.1:27006@37006 myself,slave",
            );
        let a = Topology::parse(SAMPLE).expect("parses");
        let b = Topology::parse(&other).expect("parses");
        assert_eq!(a.shape(), b.shape());
        let moved = SAMPLE.replace("0-5460", "0-5459");
        assert_ne!(a.shape(), Topology::parse(&moved).expect("parses").shape());
    }
}
