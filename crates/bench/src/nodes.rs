//! The Natter nodes a scenario loads: one node the bench starts on SQLite (the default), a
//! cluster the bench starts (`--nodes N`: its own PostgreSQL database and nats-server, N nodes
//! sharing them), or nodes already running (`--url`, several for a cluster).
//!
//! Connections are spread over the nodes round robin — connection `i` goes to node `i mod N` —
//! so that the two members of a `direct` pair sit on different nodes and every `fanout` group
//! spans every node: what one node commits, the others must hear through NATS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::Common;
use crate::procs::{self, Database, NatterLaunch, Server, Storage};
use crate::stats::note;

/// One Natter node.
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    /// For memory and CPU from /proc (unknown for a node at `--url` without `--pid`).
    pub pid: Option<i32>,
    server: Option<Server>,
}

/// What the bench started for a cluster besides the nodes.
struct Cluster {
    /// Field order matters: the broker stops before the database is dropped.
    broker: Server,
    database: Database,
}

/// The nodes under test, and whatever the bench started for them; everything it started stops
/// (and the database is dropped) when this is dropped.
pub struct Nodes {
    nodes: Vec<Node>,
    cluster: Option<Cluster>,
    launch: NatterLaunch,
    connections_per_user: usize,
    /// The SQLite data directory of a single node the bench started.
    data_dir: Option<PathBuf>,
}

/// CPU and memory of the processes behind a run, read from /proc.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Per node: CPU seconds so far.
    pub nodes_cpu_s: Vec<Option<f64>>,
    pub broker_cpu_s: Option<f64>,
    /// Per PostgreSQL backend of the bench's database: CPU seconds so far.
    pub database_cpu_s: Vec<(i32, f64)>,
}

/// One node's share of a measurement.
#[derive(Debug, Clone, Serialize)]
pub struct NodeFigures {
    pub node: String,
    pub cpu_s: Option<f64>,
    pub rss_bytes: Option<u64>,
}

impl Nodes {
    /// Start (or find) the nodes `common` asks for, with `connections_per_user` allowed per user.
    pub fn start(common: &Common, connections_per_user: usize) -> Result<Nodes, String> {
        let mut nodes = Nodes {
            nodes: Vec::new(),
            cluster: None,
            launch: common.launch(),
            connections_per_user,
            data_dir: None,
        };
        if !common.urls.is_empty() {
            for (i, url) in common.urls.iter().enumerate() {
                nodes.nodes.push(Node {
                    name: format!("node{i}"),
                    addr: procs::url_addr(url)?,
                    pid: common.pids.get(i).copied(),
                    server: None,
                });
            }
            return Ok(nodes);
        }
        match common.nodes {
            None => {
                let dir = procs::temp_dir("natter", common.keep).map_err(|e| e.to_string())?;
                nodes.data_dir = Some(dir);
                nodes.start_all()?;
            }
            Some(count) => {
                let database = Database::create(&common.postgres, common.keep)?;
                let broker = procs::start_nats(&common.peers_dir, common.keep)?;
                note(format!(
                    "cluster: database {}, nats-server at {}, {count} node(s)",
                    database.name, broker.addr
                ));
                nodes.cluster = Some(Cluster { broker, database });
                nodes.nodes = (0..count.max(1))
                    .map(|i| Node {
                        name: format!("node{i}"),
                        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                        pid: None,
                        server: None,
                    })
                    .collect();
                nodes.start_all()?;
            }
        }
        Ok(nodes)
    }

    /// (Re)start every node the bench runs: the same data directory or database as before.
    fn start_all(&mut self) -> Result<(), String> {
        if let Some(dir) = &self.data_dir {
            let server = procs::start_natter(
                &self.launch,
                &Storage::Sqlite { data_dir: dir },
                self.connections_per_user,
            )?;
            self.nodes = vec![Node {
                name: "node0".into(),
                addr: server.addr,
                pid: Some(server.pid),
                server: Some(server),
            }];
            return Ok(());
        }
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let database = cluster.database.url();
        let broker = format!("nats://{}", cluster.broker.addr);
        // One at a time: the first applies the schema's migrations (under PostgreSQL's advisory
        // lock, so concurrent starts would only wait for it anyway).
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let log_dir = procs::temp_dir(&format!("node{i}"), self.launch.keep)
                .map_err(|e| e.to_string())?;
            let node_id = format!("bench-node{i}");
            let server = procs::start_natter(
                &self.launch,
                &Storage::Cluster {
                    database: &database,
                    broker: &broker,
                    node_id: &node_id,
                    log_dir: &log_dir,
                },
                self.connections_per_user,
            )
            .map_err(|e| format!("{}: {e}", node.name))?;
            node.addr = server.addr;
            node.pid = Some(server.pid);
            node.server = Some(server);
        }
        Ok(())
    }

    /// Stop every node the bench started and start it again on the same data (to measure from
    /// fresh processes). Returns false for nodes at `--url`, which are left alone.
    pub fn restart(&mut self) -> Result<bool, String> {
        if self.nodes.iter().all(|n| n.server.is_none()) {
            return Ok(false);
        }
        for node in &mut self.nodes {
            if let Some(mut server) = node.server.take() {
                server.stop(Duration::from_secs(10));
            }
        }
        self.start_all()?;
        Ok(true)
    }

    /// Stop everything the bench started (nodes, then the broker and the database).
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut server) = node.server.take() {
                server.stop(Duration::from_secs(10));
            }
        }
        self.cluster = None;
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Every node's address, in node order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// The node of connection (or user, or setup call) `i`: round robin.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i % self.nodes.len()].addr
    }

    /// Resident memory of every node (None where unknown).
    pub fn rss(&self) -> Vec<Option<u64>> {
        self.nodes
            .iter()
            .map(|n| n.pid.and_then(procs::rss_bytes))
            .collect()
    }

    /// CPU so far of the nodes, the broker and the database's backends.
    pub fn usage(&self) -> Usage {
        Usage {
            nodes_cpu_s: self
                .nodes
                .iter()
                .map(|n| n.pid.and_then(procs::cpu_seconds))
                .collect(),
            broker_cpu_s: self
                .cluster
                .as_ref()
                .and_then(|c| procs::cpu_seconds(c.broker.pid)),
            database_cpu_s: self
                .cluster
                .as_ref()
                .map(|c| {
                    c.database
                        .backend_pids()
                        .into_iter()
                        .filter_map(|pid| Some((pid, procs::cpu_seconds(pid)?)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Per node: CPU between two [`Nodes::usage`] readings and resident memory now.
    pub fn figures(&self, before: &Usage, after: &Usage) -> Vec<NodeFigures> {
        let rss = self.rss();
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| NodeFigures {
                node: node.name.clone(),
                cpu_s: delta(before.nodes_cpu_s.get(i), after.nodes_cpu_s.get(i)),
                rss_bytes: rss.get(i).copied().flatten(),
            })
            .collect()
    }
}

impl Usage {
    /// CPU of all nodes between `before` and `self` (None if any node's is unknown).
    pub fn nodes_since(&self, before: &Usage) -> Option<f64> {
        (0..self.nodes_cpu_s.len())
            .map(|i| delta(before.nodes_cpu_s.get(i), self.nodes_cpu_s.get(i)))
            .sum()
    }

    pub fn broker_since(&self, before: &Usage) -> Option<f64> {
        Some(self.broker_cpu_s? - before.broker_cpu_s?)
    }

    /// CPU of the database's backends: those alive now, from their reading in `before` (or
    /// from zero for a backend that started since). A backend that exited in between is lost.
    pub fn database_since(&self, before: &Usage) -> Option<f64> {
        if self.database_cpu_s.is_empty() {
            return None;
        }
        Some(
            self.database_cpu_s
                .iter()
                .map(|(pid, cpu)| {
                    let start = before
                        .database_cpu_s
                        .iter()
                        .find(|(p, _)| p == pid)
                        .map_or(0.0, |(_, c)| *c);
                    cpu - start
                })
                .sum(),
        )
    }
}

fn delta(before: Option<&Option<f64>>, after: Option<&Option<f64>>) -> Option<f64> {
    Some((*after?)? - (*before?)?)
}

/// Sum of the known values; None when none is known.
pub fn sum_known(values: &[Option<u64>]) -> Option<u64> {
    values
        .iter()
        .flatten()
        .copied()
        .fold(None, |acc, v| Some(acc.unwrap_or(0) + v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_deltas_need_every_node_and_count_new_backends_from_zero() {
        let before = Usage {
            nodes_cpu_s: vec![Some(1.0), Some(2.0)],
            broker_cpu_s: Some(0.5),
            database_cpu_s: vec![(10, 1.0), (11, 2.0)],
        };
        let after = Usage {
            nodes_cpu_s: vec![Some(1.5), Some(3.0)],
            broker_cpu_s: Some(0.75),
            database_cpu_s: vec![(10, 1.5), (12, 0.25)],
        };
        assert_eq!(after.nodes_since(&before), Some(1.5));
        assert_eq!(after.broker_since(&before), Some(0.25));
        assert_eq!(after.database_since(&before), Some(0.75));
        let unknown = Usage {
            nodes_cpu_s: vec![Some(1.5), None],
            ..Usage::default()
        };
        assert_eq!(unknown.nodes_since(&before), None);
        assert_eq!(unknown.database_since(&before), None);
        assert_eq!(sum_known(&[Some(1), None, Some(2)]), Some(3));
        assert_eq!(sum_known(&[None]), None);
    }
}
