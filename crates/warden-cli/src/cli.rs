//! Flag definitions. Names are Warden's contract.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "warden",
    version,
    about = "Run untrusted code with nothing it was not granted"
)]
pub struct Cli {
    /// Warden's state directory (keys, trust store, registry, ledger)
    /// [default: $WARDEN_STATE, else /var/lib/warden for root, else
    /// $XDG_STATE_HOME/warden or ~/.local/state/warden].
    #[arg(long, global = true, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// The configuration [default: STATE/warden.yaml, if any].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a program in a sandbox.
    Run(Box<RunArgs>),
    /// Precompile a WebAssembly module for this host (`warden run` accepts the result).
    Compile {
        /// The module (.wasm or .wat).
        module: PathBuf,
        /// Where to write the precompiled module (.cwasm).
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: PathBuf,
        /// Compile for runs with a fuel budget (--fuel).
        #[arg(long)]
        metered: bool,
        /// Give up a compile that takes longer (exit status 124), e.g. 30s.
        #[arg(long = "wall-time", value_name = "DUR", value_parser = duration, default_value = "60s")]
        wall_time: Duration,
    },
    /// Work with policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Signing keys (Ed25519) in the state directory.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Sign FILE: writes FILE.sig, a DSSE envelope of an in-toto Statement.
    Sign {
        /// The key (see `warden key new`).
        #[arg(long, value_name = "NAME")]
        key: String,
        /// What the file is: module, processor, policy or config.
        #[arg(long = "type", value_name = "TYPE")]
        artifact_type: String,
        #[arg(long, value_name = "N")]
        name: Option<String>,
        #[arg(long, value_name = "V")]
        version: Option<String>,
        /// How long the statement holds, e.g. 90d (default: no expiry).
        #[arg(long, value_name = "DUR", value_parser = duration)]
        expires: Option<Duration>,
        file: PathBuf,
    },
    /// Verify FILE against FILE.sig (or --sig) and the trust store; exit 1 naming the cause if not valid.
    Verify {
        /// The type the file must have been signed as.
        #[arg(long = "type", value_name = "TYPE")]
        artifact_type: Option<String>,
        #[arg(long, value_name = "SIG")]
        sig: Option<PathBuf>,
        file: PathBuf,
    },
    /// The audit ledger.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The keys whose signatures are accepted.
    Trust {
        #[command(subcommand)]
        command: TrustCommand,
    },
    /// Processors: named, versioned, signed units of code in the registry.
    Processor {
        #[command(subcommand)]
        command: ProcessorCommand,
    },
    /// Run a registered processor with its input on stdin.
    Invoke(InvokeArgs),
    /// Tenants: each one's principals, processors, secrets and entries are its own.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Principals: who may act, for one tenant, with an API key.
    Principal {
        #[command(subcommand)]
        command: PrincipalCommand,
    },
    /// Secrets, encrypted at rest, leased to runs granted `secret:NAME`.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Leases of secrets to runs.
    Lease {
        #[command(subcommand)]
        command: LeaseCommand,
    },
    /// Serve the sandbox over HTTP (runs the `warden-serve` binary beside
    /// this one with the same arguments; `warden serve --help` for its flags).
    #[command(disable_help_flag = true)]
    Serve {
        /// Flags of `warden-serve` (`--listen ADDR`, …).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "FLAGS"
        )]
        args: Vec<String>,
    },
    /// Role-based access control (an RBAC file compiled to Cedar).
    Authz {
        /// The RBAC file [default: the configuration's, else STATE/rbac.yaml].
        #[arg(long, value_name = "FILE", global = true)]
        rbac: Option<PathBuf>,
        #[command(subcommand)]
        command: AuthzCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuthzCommand {
    /// Check an RBAC file: FILE:LINE:COLUMN errors and warnings; exit 1 on an error.
    Check { file: PathBuf },
    /// Decide one request and print the rule(s) that decided it.
    Explain {
        #[arg(long, value_name = "P")]
        principal: String,
        #[arg(long, value_name = "A")]
        action: String,
        /// The resource's name (a processor, secret, lease id or tenant).
        #[arg(long, value_name = "R")]
        resource: String,
        /// The tenant the principal acts in (and that owns the resource) [default: default].
        #[arg(long, value_name = "T")]
        tenant: Option<String>,
        /// A capability the invocation would get (repeatable).
        #[arg(long = "capability", value_name = "C")]
        capabilities: Vec<String>,
        /// A processor tag (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        #[arg(long = "input-bytes", value_name = "N", default_value_t = 0)]
        input_bytes: u64,
    },
    /// Run a table of expected decisions (CASES.yaml) against FILE; exit 1 if one differs.
    Test { file: PathBuf, cases: PathBuf },
    /// Print the compiled Cedar policies, schema and entities.
    ExportCedar,
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Store a new version of NAME, read from stdin (or --from-file), never from the command line.
    Put {
        name: String,
        #[arg(long, value_name = "T")]
        tenant: Option<String>,
        #[arg(long = "from-file", value_name = "F")]
        from_file: Option<PathBuf>,
        /// The input is the definition of a dynamic secret of this kind
        /// (`postgres`): each lease gets its own credential (docs/dynamic-secrets.md).
        #[arg(long, value_name = "KIND")]
        dynamic: Option<String>,
    },
    /// List secret names and versions (never values).
    List {
        #[arg(long, value_name = "T")]
        tenant: Option<String>,
    },
    /// Remove every version of NAME.
    Rm {
        name: String,
        #[arg(long, value_name = "T")]
        tenant: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// List leases: id, tenant, secret@version, expiry, status.
    List,
    /// Revoke a lease: later reads under it fail.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Add a tenant.
    Add { name: String },
    /// List tenants.
    List,
}

#[derive(Subcommand, Debug)]
pub enum PrincipalCommand {
    /// Add a principal of a tenant; prints its API key, once (only its hash is kept).
    Add {
        name: String,
        #[arg(long, value_name = "T")]
        tenant: String,
        /// A role (repeatable), as the RBAC file names them.
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
    },
    /// List principals (never keys).
    List,
    /// Revoke a principal's API key: it authenticates nobody from now on.
    Revoke { name: String },
}

#[derive(Subcommand, Debug)]
pub enum ProcessorCommand {
    /// Check DIR/processor.yaml and the tree; exit 1 with FILE:LINE:COLUMN errors.
    Check { dir: PathBuf },
    /// Add DIR to the registry (content-addressed copy), with DIR.sig (or --sig) if present.
    Add {
        dir: PathBuf,
        /// The signature envelope (`warden sign --type processor DIR` writes DIR.sig).
        #[arg(long, value_name = "SIG")]
        sig: Option<PathBuf>,
        /// The policy in force [default: STATE/policy.yaml, if any]; `require_signed: true` needs a valid signature.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// List registered processors.
    List,
    /// Show a processor's record (JSON): NAME, NAME@VERSION or NAME@sha256:HEX.
    Show { spec: String },
    /// Remove NAME@VERSION from the registry (ledger entries that used it stay verifiable).
    Rm { spec: String },
}

#[derive(clap::Args, Debug)]
pub struct InvokeArgs {
    /// NAME, NAME@VERSION or NAME@sha256:HEX.
    pub spec: String,
    /// The policy in force [default: STATE/policy.yaml, if any]: the ceiling of what the processor gets.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The processor's stdin [default: Warden's own stdin].
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Write the JSON report to FILE (- for stderr).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// No lines of Warden's own on stderr about limits reached.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print which backend the processor would run on and why, its
    /// grants and limits; run nothing.
    #[arg(long)]
    pub explain: bool,
    /// At most this capability (repeatable): with any, every capability the
    /// processor requests must be covered by one of them, or it is refused
    /// (exit 126), as a policy refuses; a limit capability (mem:limit:64MiB)
    /// also lowers that limit. They only narrow: nothing is granted that
    /// the processor does not request.
    #[arg(long, value_name = "CAP")]
    pub ceiling: Vec<String>,
    /// At most this memory for all processes together, e.g. 64MiB (the
    /// processor's own limit when smaller).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub memory: Option<u64>,
    /// At most this CPU time, e.g. 1s (the processor's own when smaller).
    #[arg(long = "cpu-time", value_name = "DUR", value_parser = duration)]
    pub cpu_time: Option<Duration>,
    /// At most this wall-clock time, e.g. 10s (the processor's own when smaller).
    #[arg(long = "wall-time", value_name = "DUR", value_parser = duration)]
    pub wall_time: Option<Duration>,
    /// At most this many processes and threads (the processor's own when smaller).
    #[arg(long, value_name = "N", value_parser = count)]
    pub pids: Option<u32>,
    /// At most this many bytes of stdout and stderr together (the processor's own when smaller).
    #[arg(long = "output-limit", value_name = "SIZE", value_parser = size)]
    pub output_limit: Option<u64>,
    /// Arguments given to the processor.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the tree and the chain from every entry; exit 1 naming the first bad entry.
    /// With --bundle, check an exported bundle offline instead.
    Verify {
        /// A checkpoint saved earlier (its signed note): the ledger must still extend it.
        #[arg(long, value_name = "SAVED")]
        checkpoint: Option<PathBuf>,
        /// Check this bundle (from `warden audit export`), with no access to the ledger.
        #[arg(long, value_name = "BUNDLE", conflicts_with = "checkpoint")]
        bundle: Option<PathBuf>,
        /// The log's verifier key (NAME+KEYID+KEY, as `warden audit key` prints it), or a file holding it; with --bundle.
        #[arg(long, value_name = "VERIFIERKEY", requires = "bundle")]
        key: Option<String>,
    },
    /// Record JSON objects from stdin, one per line, as `external` entries; prints the index of each.
    Append,
    /// Print entry INDEX; with --reveal (RBAC audit.reveal) also its confidential fields, checked against their commitments.
    Show {
        index: u64,
        #[arg(long)]
        reveal: bool,
    },
    /// Delete the sealed plaintext of entry INDEX's confidential FIELD for good (the entry and every proof stay valid).
    Shred { index: u64, field: String },
    /// Write entries with their exact bytes, inclusion proofs and a signed checkpoint to BUNDLE.
    Export {
        #[arg(long, value_name = "N", default_value_t = 0)]
        from: u64,
        /// One past the last entry exported [default: the ledger's size].
        #[arg(long, value_name = "M")]
        to: Option<u64>,
        #[arg(short = 'o', long = "output", value_name = "BUNDLE")]
        output: PathBuf,
    },
    /// Print an inclusion proof of entry INDEX (JSON), or with --consistency OLD a consistency proof from size OLD.
    Prove {
        /// The entry (omit with --consistency).
        index: Option<u64>,
        /// The tree size the proof is for [default: the ledger's size].
        #[arg(long, value_name = "N")]
        size: Option<u64>,
        /// Prove that the tree of OLD entries is a prefix of the tree of --size entries.
        #[arg(long, value_name = "OLD")]
        consistency: Option<u64>,
    },
    /// Sign a checkpoint of the ledger as it is now (C2SP tlog-checkpoint) and print it.
    Checkpoint,
    /// Print the log's verifier key (NAME+KEYID+KEY), or with --pem its public key as PEM.
    Key {
        #[arg(long)]
        pem: bool,
    },
    /// Print entries as JSON lines, their exact canonical bytes.
    Log {
        #[arg(long, value_name = "N", default_value_t = 0)]
        from: u64,
        /// One past the last entry printed.
        #[arg(long, value_name = "M")]
        to: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Trust the public key in KEY.pem.
    Add {
        pem: PathBuf,
        /// Artifact types it may sign, comma-separated (default: all).
        #[arg(long, value_name = "TYPES", value_delimiter = ',')]
        types: Vec<String>,
        /// Signatures made before this time (RFC 3339) fail.
        #[arg(long = "not-before", value_name = "T")]
        not_before: Option<String>,
        /// Signatures made after this time (RFC 3339) fail.
        #[arg(long = "not-after", value_name = "T")]
        not_after: Option<String>,
    },
    /// Revoke a key: its signatures fail from now on.
    Revoke {
        keyid: String,
        #[arg(long, value_name = "R")]
        reason: Option<String>,
    },
    /// List trusted keys.
    List,
    /// Whether warden.yaml, policy files and the RBAC file are used only
    /// with a valid signature (FILE.sig; type config, or policy): true or false.
    RequireSignedConfig {
        #[arg(action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
        on: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Create a key pair named NAME; prints its key id.
    New { name: String },
    /// Print the public key of NAME as PEM (SubjectPublicKeyInfo).
    Export { name: String },
    /// List the keys: name and key id.
    List,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Statically check a policy file; exit 1 if it has errors.
    Check { file: PathBuf },
}

fn size(s: &str) -> Result<u64, String> {
    warden_policy::parse_size(s).map_err(|e| e.to_string())
}

fn duration(s: &str) -> Result<Duration, String> {
    warden_policy::parse_duration(s).map_err(|e| e.to_string())
}

fn count(s: &str) -> Result<u32, String> {
    let n = warden_policy::parse_count(s, u32::MAX as u64).map_err(|e| e.to_string())?;
    u32::try_from(n).map_err(|_| format!("{s}: too large"))
}

fn count64(s: &str) -> Result<u64, String> {
    warden_policy::parse_count(s, 1 << 20).map_err(|e| e.to_string())
}

fn fuel(s: &str) -> Result<u64, String> {
    warden_policy::parse_count(s, u64::MAX).map_err(|e| e.to_string())
}

#[derive(clap::Args, Debug)]
// `--memory -1` is a bad size, not an unknown flag `-1`: the value parser
// names the cause.
#[command(allow_negative_numbers = true)]
pub struct RunArgs {
    /// Policy file (YAML): the ceiling for grants and limits.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Grant a capability, e.g. fs:read:./data (repeatable).
    #[arg(long, value_name = "CAP")]
    pub allow: Vec<String>,
    /// Show the fs: grant of the --allow just before at PATH inside instead of its own path (e.g. --allow fs:read:./fixtures --at /data).
    #[arg(long, value_name = "PATH")]
    pub at: Vec<PathBuf>,
    /// For each --at, which --allow it follows (filled from the parsed
    /// command line's order, not a flag).
    #[arg(skip)]
    pub at_index: Vec<Option<usize>>,
    /// Memory limit for all processes together, e.g. 64MiB.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub memory: Option<u64>,
    /// CPU time limit summed over all threads and processes, e.g. 1s.
    #[arg(long = "cpu-time", value_name = "DUR", value_parser = duration)]
    pub cpu_time: Option<Duration>,
    /// Wall-clock limit, e.g. 10s (exit status 124 when reached).
    #[arg(long = "wall-time", value_name = "DUR", value_parser = duration)]
    pub wall_time: Option<Duration>,
    /// Maximum number of processes and threads.
    #[arg(long, value_name = "N", value_parser = count)]
    pub pids: Option<u32>,
    /// Maximum bytes of stdout and stderr together; the rest is cut and the run stopped.
    #[arg(long = "output-limit", value_name = "SIZE", value_parser = size)]
    pub output_limit: Option<u64>,
    /// Maximum size of any file the program writes.
    #[arg(long = "file-size", value_name = "SIZE", value_parser = size)]
    pub file_size: Option<u64>,
    /// Maximum number of open files per process.
    #[arg(long = "open-files", value_name = "N", value_parser = count64)]
    pub open_files: Option<u64>,
    /// Size of the private /tmp.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub tmpfs: Option<u64>,
    /// Pass an environment variable (same as granting env:NAME).
    #[arg(long, value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// Working directory inside the sandbox.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Write the JSON report to FILE (- for stderr).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Do not record the run in the audit ledger.
    #[arg(long = "no-audit")]
    pub no_audit: bool,
    /// Say nothing on stderr about limits reached, discarded files or a
    /// substituted program (the report still has them).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print which backend the run would go to and why, its grants,
    /// limits and where its net:connect names resolve; run nothing.
    #[arg(long)]
    pub explain: bool,
    /// Fuel budget for a WebAssembly module (WASM backend only).
    #[arg(long, value_name = "N", value_parser = fuel)]
    pub fuel: Option<u64>,
    /// Reproducible WebAssembly run: fixed clock, seeded randomness (WASM backend only).
    #[arg(long)]
    pub deterministic: bool,
    /// A module the program may call by name with module:call:NAME (WASM backend only; repeatable).
    #[arg(long = "module", value_name = "NAME=PATH")]
    pub modules: Vec<String>,
    /// Whose key-value store the run uses (kv:read / kv:write grants).
    #[arg(long, value_name = "NAME")]
    pub tenant: Option<String>,
    /// Directory of the key-value stores [default: $WARDEN_KV_DIR, else /var/lib/warden/kv for root, else ~/.local/share/warden/kv].
    #[arg(long = "kv-dir", value_name = "DIR")]
    pub kv_dir: Option<PathBuf>,
    /// Isolation backend: jail, gvisor (runsc), or wasm (chosen automatically for .wasm/.wat/.cwasm).
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// The program and its arguments (after `--`, or from the first non-option word).
    #[arg(trailing_var_arg = true, required = true, value_name = "PROGRAM")]
    pub command: Vec<String>,
}
