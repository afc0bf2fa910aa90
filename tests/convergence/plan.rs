//! What one run does, chosen from its seed alone: the configuration of the clients and the
//! list of steps. The same seed gives the same plan; only thread timing differs between two
//! runs of one seed.

use std::fmt;

use serde_json::{json, Map, Value};

/// How the clients reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `HttpRemote`, batch `/sync/push` and cursor pulls.
    Batch,
    /// `HttpRemote::rest_only()`: one REST call per change.
    Rest,
    /// `WebSocketRemote`: requests and answers over one socket.
    WebSocket,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Batch => "batch",
            Transport::Rest => "rest",
            Transport::WebSocket => "ws",
        }
    }

    pub fn parse(text: &str) -> Option<Transport> {
        [Transport::Batch, Transport::Rest, Transport::WebSocket]
            .into_iter()
            .find(|t| t.name() == text)
    }
}

/// The conflict strategy every client of a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    ServerWins,
    ClientWins,
    LastUpdateWins,
    MergeFields,
    /// A resolver of the suite: the local title over the remote record.
    Custom,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::ServerWins,
        Strategy::ClientWins,
        Strategy::LastUpdateWins,
        Strategy::MergeFields,
        Strategy::Custom,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::ServerWins => "server_wins",
            Strategy::ClientWins => "client_wins",
            Strategy::LastUpdateWins => "last_update_wins",
            Strategy::MergeFields => "merge_fields",
            Strategy::Custom => "custom",
        }
    }

    pub fn parse(text: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.name() == text)
    }
}

/// Where sync-server keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Faults the proxy applies to every connection from now on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Refuse new connections; open ones were cut when this was set.
    pub partitioned: bool,
    /// Each chunk waits up to this long before it is passed on.
    pub delay_ms: u64,
    /// Chance per 1000 that a chunk from a client is cut part-way (the connection closes).
    pub cut_per_mille: u32,
    /// Chance per 1000 that a chunk from the server is dropped after the server sent it
    /// (the connection closes; the server may have committed).
    pub drop_per_mille: u32,
    /// Chance per 1000 that a chunk is held for 1.1-2 s: longer than a client's request
    /// timeout in runs with short timeouts, so the client gives up and may send again while
    /// the server has yet to see (or answer) the first request.
    pub stall_per_mille: u32,
}

/// One step of a run.
#[derive(Debug, Clone)]
pub enum Step {
    /// Client `client` reads record `id` (or starts from defaults), sets `set`, saves it.
    Edit {
        client: usize,
        id: String,
        set: Map<String, Value>,
    },
    /// Client `client` deletes `id`.
    Delete {
        client: usize,
        id: String,
    },
    /// Client `client` runs `sync_all` (skipped while its previous one runs).
    Sync {
        client: usize,
    },
    Sleep {
        ms: u64,
    },
    SetFaults(Faults),
    /// SIGKILL the client's process and start it again on its file.
    KillClient {
        client: usize,
    },
    /// SIGKILL the server's process; it stays down until `RestartServer`.
    KillServer,
    RestartServer,
}

/// A run: its configuration and steps.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub backend: Backend,
    pub transport: Transport,
    pub strategy: Strategy,
    pub batch_size: usize,
    pub delta: bool,
    /// HTTP transports: the clients also keep the realtime WebSocket, so changes arrive by
    /// events as well as by pulls (the WebSocket transport always has them).
    pub realtime: bool,
    /// Request timeouts of 1 s (else the defaults).
    pub short_timeouts: bool,
    /// Per client: automatic sync after writes (else only the steps' syncs).
    pub auto_sync: Vec<bool>,
    pub steps: Vec<Step>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} backend {:?} transport {}{} strategy {} batch {} delta {} short timeouts {} clients {} (auto_sync {:?}) steps {}",
            self.seed,
            self.backend,
            self.transport.name(),
            if self.realtime { "+realtime" } else { "" },
            self.strategy.name(),
            self.batch_size,
            self.delta,
            self.short_timeouts,
            self.auto_sync.len(),
            self.auto_sync,
            self.steps.len()
        )
    }
}

/// Ids every client writes (conflicts).
pub const SHARED_IDS: usize = 3;
/// Ids only one client writes, per client.
pub const OWN_IDS: usize = 3;

pub fn shared_id(k: usize) -> String {
    format!("s{k}")
}

pub fn own_id(client: usize, k: usize) -> String {
    format!("c{client}-{k}")
}

/// The client that alone writes `id`, if it is an own id.
pub fn owner_of(id: &str) -> Option<usize> {
    let rest = id.strip_prefix('c')?;
    let (client, _) = rest.split_once('-')?;
    client.parse().ok()
}

/// Field values of a record that nobody wrote yet (an edit of an absent record starts here).
pub fn defaults(id: &str) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "id": id,
        "title": "",
        "description": "",
        "isCompleted": false,
        "priority": 0,
        "tags": [],
        "due": null,
    }) else {
        unreachable!("a JSON object literal")
    };
    map
}

/// The model fields a check compares (everything but the id).
pub const FIELDS: [&str; 6] = [
    "title",
    "description",
    "isCompleted",
    "priority",
    "tags",
    "due",
];

impl Plan {
    pub fn generate(seed: u64, backend: Backend) -> Plan {
        let mut rng = fastrand::Rng::with_seed(seed);
        let clients = rng.usize(2..=4);
        let transport = [Transport::Batch, Transport::Rest, Transport::WebSocket][rng.usize(0..3)];
        let strategy = Strategy::ALL[rng.usize(0..Strategy::ALL.len())];
        let batch_size = if rng.bool() { 1 } else { rng.usize(2..=25) };
        let delta = rng.bool();
        let realtime = transport != Transport::WebSocket && rng.bool();
        let short_timeouts = rng.bool();
        let auto_sync = (0..clients).map(|_| rng.bool()).collect();
        let n_steps = rng.usize(60..=140);
        let mut steps = Vec::with_capacity(n_steps + 1);
        let mut server_down = false;
        let mut faults = Faults::default();
        // A counter that makes every written value unique in the run.
        let mut mark = 0u32;
        for _ in 0..n_steps {
            let client = rng.usize(0..clients);
            let roll = rng.u32(0..100);
            let step = match roll {
                0..=34 => {
                    let id = if rng.bool() {
                        shared_id(rng.usize(0..SHARED_IDS))
                    } else {
                        own_id(client, rng.usize(0..OWN_IDS))
                    };
                    if rng.u32(0..100) < 15 {
                        Step::Delete { client, id }
                    } else {
                        mark += 1;
                        Step::Edit {
                            client,
                            id,
                            set: edit(&mut rng, mark),
                        }
                    }
                }
                35..=61 => Step::Sync { client },
                62..=71 => Step::Sleep {
                    ms: rng.u64(5..=60),
                },
                72..=83 => {
                    faults = match rng.u32(0..7) {
                        0 => Faults::default(),
                        1 => Faults {
                            delay_ms: rng.u64(5..=80),
                            ..faults
                        },
                        2 => Faults {
                            cut_per_mille: rng.u32(50..=500),
                            ..faults
                        },
                        3 => Faults {
                            drop_per_mille: rng.u32(50..=500),
                            ..faults
                        },
                        4 => Faults {
                            partitioned: true,
                            ..faults
                        },
                        5 => Faults {
                            stall_per_mille: rng.u32(20..=150),
                            ..faults
                        },
                        _ => Faults {
                            partitioned: false,
                            ..faults
                        },
                    };
                    Step::SetFaults(faults)
                }
                84..=90 => Step::KillClient { client },
                91..=94 => {
                    server_down = !server_down;
                    if server_down {
                        Step::KillServer
                    } else {
                        Step::RestartServer
                    }
                }
                _ => Step::Sleep {
                    ms: rng.u64(1..=20),
                },
            };
            steps.push(step);
        }
        if server_down {
            steps.push(Step::RestartServer);
        }
        Plan {
            seed,
            backend,
            transport,
            strategy,
            batch_size,
            delta,
            realtime,
            short_timeouts,
            auto_sync,
            steps,
        }
    }
}

/// A random non-empty set of field values, each unique to this edit (but `isCompleted`).
fn edit(rng: &mut fastrand::Rng, mark: u32) -> Map<String, Value> {
    let mut set = Map::new();
    while set.is_empty() {
        if rng.bool() {
            set.insert("title".into(), json!(format!("t{mark}")));
        }
        if rng.u32(0..3) == 0 {
            set.insert("description".into(), json!(format!("d{mark}")));
        }
        if rng.bool() {
            set.insert("priority".into(), json!(mark));
        }
        if rng.u32(0..4) == 0 {
            set.insert("isCompleted".into(), json!(rng.bool()));
        }
        if rng.u32(0..4) == 0 {
            set.insert("tags".into(), json!([format!("g{mark}")]));
        }
    }
    set
}
