//! A private RabbitMQ cluster: `n` private nodes (`RabbitNode`: own names,
//! ports, data and log directories) sharing one Erlang cookie, joined to the
//! first with `rabbitmqctl stop_app; join_cluster; start_app`. Dropping it
//! kills every node (each `RabbitNode` kills its own on drop).

use std::io;
use std::time::{Duration, Instant};

use super::{NodeOptions, RabbitNode};

/// Erlang schedulers that do not spin when idle: three nodes on a small
/// shared machine otherwise burn a core doing nothing.
const FRUGAL_ERL_ARGS: &str = "+sbwt none +sbwtdcpu none +sbwtdio none";

pub struct RabbitCluster {
    pub nodes: Vec<RabbitNode>,
}

impl RabbitCluster {
    pub fn start(n: usize) -> io::Result<RabbitCluster> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let opts = NodeOptions {
            cookie: Some(format!("CTCLUSTER{}X{nanos}", std::process::id())),
            erl_args: FRUGAL_ERL_ARGS.into(),
            ..Default::default()
        };
        // Boot in parallel: most of a node's start is the Erlang VM's.
        let booting: Vec<_> = (0..n)
            .map(|_| {
                let o = opts.clone();
                std::thread::spawn(move || RabbitNode::start(o))
            })
            .collect();
        let mut nodes = Vec::with_capacity(n);
        let mut failed = None;
        for b in booting {
            match b.join() {
                Ok(Ok(node)) => nodes.push(node),
                Ok(Err(e)) => failed = Some(e),
                Err(_) => failed = Some(io::Error::other("node start panicked")),
            }
        }
        if let Some(e) = failed {
            return Err(e); // the nodes that did start are killed on drop
        }
        let cluster = RabbitCluster { nodes };
        let seed = cluster.nodes[0].name.clone();
        for node in &cluster.nodes[1..] {
            for args in [&["stop_app"][..], &["join_cluster", &seed], &["start_app"]] {
                ctl_ok(node, args)?;
            }
        }
        let want = cluster.nodes.len();
        cluster.await_running(0, want)?;
        Ok(cluster)
    }

    pub fn amqp_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RabbitNode::amqp_url).collect()
    }

    /// Which node listens on `port` (an AMQP port).
    pub fn by_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port == port)
    }

    /// The names of the running cluster members, as node `via` sees them.
    pub fn running_nodes(&self, via: usize) -> io::Result<Vec<String>> {
        let out = ctl_ok(
            &self.nodes[via],
            &["-q", "cluster_status", "--formatter", "json"],
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| io::Error::other(format!("cluster_status: {e}")))?;
        Ok(v["running_nodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Waits until node `via` reports `want` running members.
    pub fn await_running(&self, via: usize, want: usize) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let running = self.running_nodes(via)?;
            if running.len() >= want {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "only {running:?} running after 60 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The nodes (indexes) holding a client connection whose client-given
    /// name (`connection_name`) contains `name`, asked of node `via`
    /// (`list_connections` covers the whole cluster; a connection's `port`
    /// is the node's AMQP port).
    pub fn nodes_with_connection(&self, via: usize, name: &str) -> io::Result<Vec<usize>> {
        let out = ctl_ok(
            &self.nodes[via],
            &[
                "-q",
                "list_connections",
                "port",
                "client_properties",
                "--formatter",
                "json",
            ],
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| io::Error::other(format!("list_connections: {e}")))?;
        let mut found: Vec<usize> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                // [["connection_name", "longstr", "..."], ...]
                c["client_properties"].as_array().is_some_and(|props| {
                    props.iter().any(|p| {
                        p[0] == "connection_name" && p[2].as_str().is_some_and(|n| n.contains(name))
                    })
                })
            })
            .filter_map(|c| c["port"].as_u64())
            .filter_map(|p| self.by_port(p as u16))
            .collect();
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    /// The type (`quorum`, `classic`, …) of queue `queue`, asked of node `via`.
    pub fn queue_type(&self, via: usize, queue: &str) -> io::Result<Option<String>> {
        self.queue_info(via, queue, "type")
    }

    /// The node (index) leading quorum queue `queue`, asked of node `via`.
    pub fn queue_leader(&self, via: usize, queue: &str) -> io::Result<Option<usize>> {
        let leader = self.queue_info(via, queue, "leader")?;
        Ok(leader.and_then(|l| self.nodes.iter().position(|n| n.name == l)))
    }

    /// One `list_queues` item of queue `queue`, as a string.
    fn queue_info(&self, via: usize, queue: &str, item: &str) -> io::Result<Option<String>> {
        let out = ctl_ok(
            &self.nodes[via],
            &["-q", "list_queues", "name", item, "--formatter", "json"],
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| io::Error::other(format!("list_queues: {e}")))?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .find(|q| q["name"] == queue)
            .and_then(|q| q[item].as_str().map(String::from)))
    }
}

/// `rabbitmqctl -n node ARGS`, an error unless it succeeds.
fn ctl_ok(node: &RabbitNode, args: &[&str]) -> io::Result<std::process::Output> {
    let out = node.ctl(args)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "rabbitmqctl -n {} {}: {}{}",
            node.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}
