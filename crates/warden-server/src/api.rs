//! The request and response bodies of `POST /v1/execute`, and the checks
//! that turn a request into a [`Plan`] (or a 400 naming the field).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warden_policy::{Capability, LimitField, LimitValue};

use crate::error::ApiError;

/// Most files in one request.
pub const MAX_FILES: usize = 64;
/// Longest file name (a relative path), in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Most components (directories and the file) of a file name.
pub const MAX_NAME_DEPTH: usize = 8;
/// Most program arguments.
pub const MAX_ARGS: usize = 256;
/// Most capabilities.
pub const MAX_CAPABILITIES: usize = 64;
/// Most test cases in one request.
pub const MAX_TEST_CASES: usize = 64;
/// Longest test case name, in bytes.
pub const MAX_CASE_NAME_BYTES: usize = 256;
/// Longest processor reference (`NAME@VERSION`), in bytes.
pub const MAX_PROCESSOR_BYTES: usize = 256;

/// A language the service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    Node,
    Php,
    Sh,
    Wasm,
}

impl Language {
    pub const ALL: [Language; 5] = [
        Language::Python,
        Language::Node,
        Language::Php,
        Language::Sh,
        Language::Wasm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Node => "node",
            Language::Php => "php",
            Language::Sh => "sh",
            Language::Wasm => "wasm",
        }
    }

    /// The interpreter the entry file is given to; `None` for WebAssembly
    /// (the module is the program: `warden` hands it to `warden-wasm`).
    pub fn interpreter(self) -> Option<&'static str> {
        match self {
            Language::Python => Some("python3"),
            Language::Node => Some("node"),
            Language::Php => Some("php"),
            Language::Sh => Some("sh"),
            Language::Wasm => None,
        }
    }

    /// The RBAC resource (a processor name) a request for this language
    /// is authorized as: `invoke` of `runtime:LANGUAGE`.
    pub fn resource(self) -> String {
        format!("runtime:{}", self.as_str())
    }
}

/// How a file's `content` is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
}

/// One file of the program.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// A relative path: no `..`, no leading `/`, no NUL, at most 255 bytes
    /// and 8 components.
    #[schema(example = "main.py")]
    pub name: String,
    pub content: String,
    #[serde(default)]
    pub encoding: Encoding,
}

/// Limits, units in their names. Omitted: the service's defaults.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Wall-clock limit (default 10000; at most the service's maximum,
    /// 300000 unless configured).
    pub wall_time_ms: Option<u64>,
    /// CPU-time limit of all processes.
    pub cpu_time_ms: Option<u64>,
    /// Memory limit (at least 1 MiB; default 512 MiB).
    pub memory_bytes: Option<u64>,
    /// Most processes and threads (default 64).
    pub pids: Option<u64>,
    /// Most bytes of output, stdout and stderr together (default 1 MiB,
    /// at most 16 MiB).
    pub output_bytes: Option<u64>,
}

/// One test case: the program runs in a fresh sandbox with `stdin`, and
/// passes when it exits 0 and its stdout equals `expected_stdout`, once
/// trailing whitespace is taken off both.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// A label, given back with the case's result (at most 256 bytes).
    #[serde(default)]
    pub name: Option<String>,
    /// The program's standard input for this case.
    #[serde(default)]
    pub stdin: Option<String>,
    /// What the program should write on stdout.
    pub expected_stdout: String,
}

/// `POST /v1/execute`: `language` with `files`, or `processor`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// The language of `files` (with `files`; not with `processor`).
    // No `#[serde(default)]`: left out of an object it is `None` all the
    // same, and a JSON array (which serde would take for the fields in
    // order) is refused as too short instead of read as all defaults.
    pub language: Option<Language>,
    /// A processor of the caller's tenant's registry, `NAME@VERSION` (or
    /// `NAME`: its highest version; `NAME@sha256:HEX`), run as `warden
    /// invoke` runs it (instead of `language` and `files`).
    #[serde(default)]
    #[schema(example = "upper@1.2.0")]
    pub processor: Option<String>,
    /// The program's files (at least one, at most 64; with `language`).
    #[serde(default)]
    pub files: Option<Vec<FileSpec>>,
    /// The file to run (default: the first).
    #[serde(default)]
    pub entry: Option<String>,
    /// The program's standard input (not with `test_cases`: each has its own).
    #[serde(default)]
    pub stdin: Option<String>,
    /// 1 to 64 test cases: the request is prepared once and each case runs
    /// in a fresh sandbox of its own, with its own verdict and ledger entry.
    #[serde(default)]
    pub test_cases: Option<Vec<TestCase>>,
    /// Arguments after the entry file.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Capabilities as for `warden run --allow` (`net:http:example.com`,
    /// `secret:NAME`, `mem:limit:64MiB`, …). `fs:` and `env:` grants are
    /// refused: they name the service host's files and environment.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// How `stdout`/`stderr` are encoded in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputEncoding {
    /// The bytes were valid UTF-8 and are the string itself.
    Utf8,
    /// The bytes were not valid UTF-8: the string is their base64.
    Base64,
}

/// The answer of `POST /v1/execute` for a run that happened (whatever
/// its status). Also the `result` of a finished submission.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecuteResponse {
    /// What the program wrote on stdout (redacted as in the ledger).
    pub stdout: String,
    pub stdout_encoding: OutputEncoding,
    /// What the program wrote on stderr, then Warden's own lines, if any.
    pub stderr: String,
    pub stderr_encoding: OutputEncoding,
    /// The run's report, as `warden run --report` writes it
    /// (docs/report.schema.json).
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
    /// The run's entry in the audit ledger (`report.audit.index`).
    pub ledger_index: Option<u64>,
}

/// The verdict of a test case, from its run's report: `passed` (exited 0,
/// stdout as expected), `wrong_answer` (exited 0, other stdout),
/// `time_limit` (wall-clock or CPU time), `memory_limit`, `output_limit`,
/// `runtime_error` (a nonzero exit, a signal, a denied system or host
/// call), `refused` (policy or RBAC: nothing ran), `error` (Warden could
/// not run it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    WrongAnswer,
    TimeLimit,
    MemoryLimit,
    OutputLimit,
    RuntimeError,
    Refused,
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::WrongAnswer => "wrong_answer",
            Verdict::TimeLimit => "time_limit",
            Verdict::MemoryLimit => "memory_limit",
            Verdict::OutputLimit => "output_limit",
            Verdict::RuntimeError => "runtime_error",
            Verdict::Refused => "refused",
            Verdict::Error => "error",
        }
    }
}

/// One test case's result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TestCaseResult {
    /// The case's `name`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub verdict: Verdict,
    /// What the program wrote on stdout (redacted as in the ledger).
    pub stdout: String,
    pub stdout_encoding: OutputEncoding,
    /// What the program wrote on stderr, then Warden's own lines, if any.
    pub stderr: String,
    pub stderr_encoding: OutputEncoding,
    /// The program's exit code, when it exited.
    pub exit_code: Option<i64>,
    /// The run's wall time (`report.wall_ms`).
    pub time_ms: Option<u64>,
    /// The run's report, as `warden run --report` writes it; null for a
    /// case that could not be run (verdict `error`, stderr says why).
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
    /// The run's entry in the audit ledger (`report.audit.index`).
    pub ledger_index: Option<u64>,
}

/// The answer of `POST /v1/execute` with `test_cases`: every case's
/// result, in the request's order, and a summary.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TestCasesResponse {
    /// `passed` when every case passed, else the first other verdict.
    pub verdict: Verdict,
    /// Cases that passed.
    pub passed: u64,
    /// Cases in the request.
    pub total: u64,
    pub test_cases: Vec<TestCaseResult>,
}

/// What `POST /v1/execute` answers with 200: one run's output and report,
/// or with `test_cases`, each case's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ExecuteAnswer {
    TestCases(TestCasesResponse),
    Run(ExecuteResponse),
}

/// One language of `GET /v1/runtimes`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Runtime {
    pub language: Language,
    /// The interpreter (`python3`), or the binary that runs modules
    /// (`warden-wasm`).
    pub interpreter: String,
    /// Where it was found; null when it was not.
    pub path: Option<String>,
    /// Its version line; null when not found or it has none.
    pub version: Option<String>,
    pub available: bool,
}

/// `GET /v1/runtimes`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Runtimes {
    pub runtimes: Vec<Runtime>,
}

/// The service's bounds on requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub default_wall_time: Duration,
    pub max_wall_time: Duration,
    pub default_output_bytes: u64,
    pub max_output_bytes: u64,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            default_wall_time: Duration::from_secs(10),
            max_wall_time: Duration::from_secs(300),
            default_output_bytes: 1 << 20,
            max_output_bytes: 16 << 20,
        }
    }
}

/// What a plan runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// The request's files, the entry run by the language's interpreter.
    Files {
        language: Language,
        /// Relative paths and contents.
        files: Vec<(PathBuf, Vec<u8>)>,
        /// The entry, relative.
        entry: PathBuf,
    },
    /// A processor of the caller's tenant, as `warden invoke` takes it
    /// (`NAME@VERSION` once [`crate::server::authorize`] resolved it).
    Processor(String),
}

/// One test case, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub name: Option<String>,
    pub stdin: Vec<u8>,
    pub expected_stdout: Vec<u8>,
}

/// A checked request: what to write and how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub program: Program,
    pub args: Vec<String>,
    pub stdin: Vec<u8>,
    /// Canonical capability strings.
    pub capabilities: Vec<String>,
    pub wall_time: Duration,
    pub cpu_time: Option<Duration>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub output_bytes: u64,
    /// The test cases (none: one run with `stdin`).
    pub cases: Vec<Case>,
}

impl Plan {
    /// A plan of `files` under `language`, without test cases.
    pub fn files(&self) -> &[(PathBuf, Vec<u8>)] {
        match &self.program {
            Program::Files { files, .. } => files,
            Program::Processor(_) => &[],
        }
    }

    /// The language, for a plan of files.
    pub fn language(&self) -> Option<Language> {
        match &self.program {
            Program::Files { language, .. } => Some(*language),
            Program::Processor(_) => None,
        }
    }

    /// Bytes of input of one run (files and stdin; with test cases, the
    /// largest case's stdin), as RBAC's `max_input_bytes` sees them.
    pub fn input_bytes(&self) -> u64 {
        let files: usize = self.files().iter().map(|(_, c)| c.len()).sum();
        let stdin = self
            .cases
            .iter()
            .map(|c| c.stdin.len())
            .max()
            .unwrap_or(self.stdin.len());
        (files + stdin) as u64
    }
}

/// Parses a request body: a 400 whose `code` and message name what is
/// wrong (`bad_json`, `unknown_field`, `missing_field`, `invalid_field`,
/// `unknown_language`).
pub fn parse_request(body: &[u8]) -> Result<ExecuteRequest, ApiError> {
    parse_json(body)
}

/// Parses a JSON body into `T`, with the 400s of [`parse_request`]
/// (`bad_json`, `unknown_field`, `missing_field`, `invalid_field`, and
/// `unknown_language` for a field `language`).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let request = parsed.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        json_error(&path, &inner)
    })?;
    de.end()
        .map_err(|e| ApiError::bad("bad_json", format!("invalid JSON: {e}")))?;
    Ok(request)
}

fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let text = e.to_string();
    // serde_json appends " at line L column C"; the field path says more.
    let cause = text.split(" at line ").next().unwrap_or(&text).to_string();
    let at = |field: &str| {
        if path.is_empty() || path == "." {
            field.to_string()
        } else if field.is_empty() {
            path.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad("bad_json", format!("invalid JSON: {text}"))
        }
        Category::Data => {
            if let Some(rest) = cause.strip_prefix("unknown field `") {
                let field = rest.split('`').next().unwrap_or("");
                ApiError::bad(
                    "unknown_field",
                    format!("unknown field {}: {cause}", at(field)),
                )
            } else if let Some(rest) = cause.strip_prefix("missing field `") {
                let field = rest.split('`').next().unwrap_or("");
                ApiError::bad("missing_field", format!("missing field {}", at(field)))
            } else if path == "language" && cause.starts_with("unknown variant") {
                ApiError::bad("unknown_language", format!("language: {cause}"))
            } else {
                let field = if path.is_empty() || path == "." {
                    "request body".to_string()
                } else {
                    path.to_string()
                };
                ApiError::bad("invalid_field", format!("{field}: {cause}"))
            }
        }
    }
}

/// A file name as the request gives it, checked: relative, no `..` or
/// `.` components, no NUL, no empty components, bounded.
pub fn check_name(field: &str, name: &str) -> Result<PathBuf, ApiError> {
    let bad = |why: &str| ApiError::bad("invalid_file", format!("{field}: {name:?} {why}"));
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(bad(&format!("is longer than {MAX_NAME_BYTES} bytes")));
    }
    if name.contains('\0') {
        return Err(bad("contains NUL"));
    }
    if name.starts_with('/') {
        return Err(bad("is absolute (file names are relative paths)"));
    }
    if name.contains('\\') || name.chars().any(char::is_control) {
        return Err(bad("contains a backslash or a control character"));
    }
    let mut depth = 0;
    for part in name.split('/') {
        match part {
            "" => return Err(bad("has an empty component")),
            "." | ".." => return Err(bad("has a '.' or '..' component")),
            _ => depth += 1,
        }
    }
    if depth > MAX_NAME_DEPTH {
        return Err(bad(&format!("has more than {MAX_NAME_DEPTH} components")));
    }
    let path = PathBuf::from(name);
    // Belt and braces: what remains is only normal components.
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad("is not a plain relative path"));
    }
    Ok(path)
}

fn limit(field: &str, kind: LimitField, value: LimitValue) -> Result<(), ApiError> {
    kind.check_bounds(value, field)
        .map_err(|m| ApiError::bad("invalid_limit", m))
}

/// Checks a parsed request against the service's bounds.
pub fn plan(request: ExecuteRequest, bounds: &Bounds) -> Result<Plan, ApiError> {
    let program = match (request.language, &request.processor) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "invalid_field",
                "language and processor: give one of them, not both (language with files, or a processor)",
            ))
        }
        (None, None) => {
            return Err(ApiError::bad(
                "missing_field",
                "missing field language (or processor): give language with files, or a processor",
            ))
        }
        (Some(language), None) => {
            let Some(files) = &request.files else {
                return Err(ApiError::bad("missing_field", "missing field files"));
            };
            let (files, entry) = check_files(files, request.entry.as_deref())?;
            Program::Files {
                language,
                files,
                entry,
            }
        }
        (None, Some(spec)) => {
            if request.files.is_some() || request.entry.is_some() {
                let field = if request.files.is_some() { "files" } else { "entry" };
                return Err(ApiError::bad(
                    "invalid_field",
                    format!("{field}: not with processor (a processor runs its own registered files)"),
                ));
            }
            Program::Processor(check_processor(spec)?)
        }
    };
    if request.args.len() > MAX_ARGS {
        return Err(ApiError::bad(
            "invalid_field",
            format!("args: {} arguments; at most {MAX_ARGS}", request.args.len()),
        ));
    }
    if let Some(i) = request.args.iter().position(|a| a.contains('\0')) {
        return Err(ApiError::bad(
            "invalid_field",
            format!("args[{i}]: contains NUL"),
        ));
    }
    let mut limits = check_limits(&request.limits, bounds)?;
    let capabilities = check_capabilities(&request.capabilities)?;
    let cases = match request.test_cases {
        None => Vec::new(),
        Some(cases) => {
            if request.stdin.is_some() {
                return Err(ApiError::bad(
                    "invalid_field",
                    "stdin: not with test_cases (each test case has its own stdin)",
                ));
            }
            limits.wall_time = case_wall_time(
                cases.len(),
                request.limits.wall_time_ms.is_some(),
                &limits,
                bounds,
            )?;
            check_cases(cases)?
        }
    };
    Ok(Plan {
        program,
        args: request.args,
        stdin: request.stdin.map(String::into_bytes).unwrap_or_default(),
        capabilities,
        wall_time: limits.wall_time,
        cpu_time: limits.cpu_time,
        memory_bytes: limits.memory_bytes,
        pids: limits.pids,
        output_bytes: limits.output_bytes,
        cases,
    })
}

/// A processor reference as the request gives it, checked enough to be
/// safe on a command line: it starts with a letter or digit (never `-`),
/// no whitespace or control characters, at most 256 bytes. The registry
/// checks the rest when it resolves it.
fn check_processor(spec: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::bad("invalid_field", format!("processor: {spec:?} {why}"));
    if spec.is_empty() {
        return Err(bad("is empty"));
    }
    if spec.len() > MAX_PROCESSOR_BYTES {
        return Err(bad(&format!("is longer than {MAX_PROCESSOR_BYTES} bytes")));
    }
    if !spec.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(bad(
            "does not start with a processor name (a lowercase letter or digit): give NAME@VERSION",
        ));
    }
    if spec
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(bad(
            "contains whitespace, a control or a non-ASCII character: give NAME@VERSION",
        ));
    }
    Ok(spec.to_string())
}

/// Each test case's wall-clock limit: the cases of a request run one
/// after the other, so together they must fit in the longest run the
/// service allows (`--max-wall-time`). Given: `cases ×
/// limits.wall_time_ms` may be at most that (400 otherwise); not given:
/// the default, or that maximum shared out among the cases when smaller.
fn case_wall_time(
    cases: usize,
    given: bool,
    limits: &Limits,
    bounds: &Bounds,
) -> Result<Duration, ApiError> {
    let n = u32::try_from(cases.max(1)).unwrap_or(u32::MAX);
    let max = bounds.max_wall_time.as_millis();
    if given {
        let total = limits.wall_time.as_millis() * u128::from(n);
        if total > max {
            return Err(ApiError::bad(
                "invalid_limit",
                format!(
                    "limits.wall_time_ms: {n} test cases × {} ms is {total} ms, more than the {max} ms one request may run on this service; lower limits.wall_time_ms or send fewer test cases",
                    limits.wall_time.as_millis()
                ),
            ));
        }
        return Ok(limits.wall_time);
    }
    let share = bounds.max_wall_time / n;
    let wall = limits.wall_time.min(share);
    if wall.as_millis() < 1 {
        return Err(ApiError::bad(
            "invalid_limit",
            format!("test_cases: {n} test cases cannot share the {max} ms one request may run on this service"),
        ));
    }
    // Whole milliseconds, as `warden run` takes them.
    Ok(Duration::from_millis(
        u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
    ))
}

/// The test cases, checked: 1 to 64, names at most 256 bytes.
fn check_cases(cases: Vec<TestCase>) -> Result<Vec<Case>, ApiError> {
    if cases.is_empty() {
        return Err(ApiError::bad(
            "invalid_field",
            "test_cases: at least one test case is needed (or leave test_cases out)",
        ));
    }
    if cases.len() > MAX_TEST_CASES {
        return Err(ApiError::bad(
            "invalid_field",
            format!(
                "test_cases: {} test cases; at most {MAX_TEST_CASES}",
                cases.len()
            ),
        ));
    }
    cases
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            if let Some(name) = &c.name {
                if name.len() > MAX_CASE_NAME_BYTES {
                    return Err(ApiError::bad(
                        "invalid_field",
                        format!("test_cases[{i}].name: longer than {MAX_CASE_NAME_BYTES} bytes"),
                    ));
                }
            }
            Ok(Case {
                name: c.name,
                stdin: c.stdin.map(String::into_bytes).unwrap_or_default(),
                expected_stdout: c.expected_stdout.into_bytes(),
            })
        })
        .collect()
}

/// A request's files and entry, checked: 1 to 64, names beneath the
/// directory, none twice or another's directory, base64 decoded.
#[allow(clippy::type_complexity)]
fn check_files(
    request_files: &[FileSpec],
    entry: Option<&str>,
) -> Result<(Vec<(PathBuf, Vec<u8>)>, PathBuf), ApiError> {
    use base64::Engine as _;
    if request_files.is_empty() {
        return Err(ApiError::bad(
            "invalid_file",
            "files: at least one file is needed",
        ));
    }
    if request_files.len() > MAX_FILES {
        return Err(ApiError::bad(
            "invalid_file",
            format!("files: {} files; at most {MAX_FILES}", request_files.len()),
        ));
    }
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::with_capacity(request_files.len());
    for (i, f) in request_files.iter().enumerate() {
        let name = check_name(&format!("files[{i}].name"), &f.name)?;
        let content = match f.encoding {
            Encoding::Utf8 => f.content.clone().into_bytes(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(f.content.as_bytes())
                .map_err(|e| {
                    ApiError::bad(
                        "invalid_file",
                        format!("files[{i}].content: not valid base64: {e}"),
                    )
                })?,
        };
        // One file may not be another's directory, nor appear twice.
        if let Some((other, _)) = files
            .iter()
            .find(|(o, _)| o == &name || o.starts_with(&name) || name.starts_with(o))
        {
            return Err(ApiError::bad(
                "invalid_file",
                format!(
                    "files[{i}].name: {:?} clashes with {:?}",
                    name.display(),
                    other.display()
                ),
            ));
        }
        files.push((name, content));
    }
    let entry = match entry {
        Some(e) => {
            let p = check_name("entry", e)?;
            if !files.iter().any(|(n, _)| n == &p) {
                return Err(ApiError::bad(
                    "invalid_file",
                    format!("entry: {e:?} is not one of the files"),
                ));
            }
            p
        }
        None => files[0].0.clone(),
    };
    Ok((files, entry))
}

/// Checked limits: the request's, or the service's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(with = "millis")]
    pub wall_time: Duration,
    #[serde(with = "opt_millis")]
    pub cpu_time: Option<Duration>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub output_bytes: u64,
}

mod millis {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_millis)
    }
}

mod opt_millis {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        <Option<u64> as serde::Deserialize>::deserialize(d).map(|o| o.map(Duration::from_millis))
    }
}

/// Checks limits against the service's bounds (400 `invalid_limit`
/// naming the field).
pub fn check_limits(l: &LimitsSpec, bounds: &Bounds) -> Result<Limits, ApiError> {
    let wall_time = match l.wall_time_ms {
        Some(ms) => {
            let d = Duration::from_millis(ms);
            limit(
                "limits.wall_time_ms",
                LimitField::WallTime,
                LimitValue::Time(d),
            )?;
            if d > bounds.max_wall_time {
                return Err(ApiError::bad(
                    "invalid_limit",
                    format!(
                        "limits.wall_time_ms may be at most {} on this service",
                        bounds.max_wall_time.as_millis()
                    ),
                ));
            }
            d
        }
        None => bounds.default_wall_time,
    };
    let cpu_time = match l.cpu_time_ms {
        Some(ms) => {
            let d = Duration::from_millis(ms);
            limit(
                "limits.cpu_time_ms",
                LimitField::CpuTime,
                LimitValue::Time(d),
            )?;
            Some(d)
        }
        None => None,
    };
    if let Some(b) = l.memory_bytes {
        limit(
            "limits.memory_bytes",
            LimitField::Memory,
            LimitValue::Bytes(b),
        )?;
    }
    if let Some(n) = l.pids {
        limit("limits.pids", LimitField::Pids, LimitValue::Count(n))?;
    }
    let output_bytes = match l.output_bytes {
        Some(0) => {
            return Err(ApiError::bad(
                "invalid_limit",
                "limits.output_bytes must be at least 1",
            ))
        }
        Some(b) if b > bounds.max_output_bytes => {
            return Err(ApiError::bad(
                "invalid_limit",
                format!(
                    "limits.output_bytes may be at most {} on this service",
                    bounds.max_output_bytes
                ),
            ))
        }
        Some(b) => b,
        None => bounds.default_output_bytes,
    };
    Ok(Limits {
        wall_time,
        cpu_time,
        memory_bytes: l.memory_bytes,
        pids: l.pids,
        output_bytes,
    })
}

/// Checks capabilities (400 `invalid_capability` naming the index):
/// `fs:` and `env:` grants are refused. Canonical strings.
pub fn check_capabilities(requested: &[String]) -> Result<Vec<String>, ApiError> {
    if requested.len() > MAX_CAPABILITIES {
        return Err(ApiError::bad(
            "invalid_capability",
            format!(
                "capabilities: {} capabilities; at most {MAX_CAPABILITIES}",
                requested.len()
            ),
        ));
    }
    let mut capabilities = Vec::with_capacity(requested.len());
    for (i, text) in requested.iter().enumerate() {
        let cap: Capability = text.parse().map_err(|e| {
            ApiError::bad(
                "invalid_capability",
                format!("capabilities[{i}]: {text:?}: {e}"),
            )
        })?;
        if matches!(
            cap,
            Capability::FsRead(_) | Capability::FsWrite(_) | Capability::Env(_)
        ) {
            return Err(ApiError::bad(
                "invalid_capability",
                format!(
                    "capabilities[{i}]: {text:?}: fs: and env: grants name the service host's files and environment and are not accepted over the API"
                ),
            ));
        }
        capabilities.push(cap.to_string());
    }
    Ok(capabilities)
}

/// `bytes` as a string of an answer: itself when UTF-8, else base64.
pub fn encode_output(bytes: Vec<u8>) -> (String, OutputEncoding) {
    use base64::Engine as _;
    match String::from_utf8(bytes) {
        Ok(s) => (s, OutputEncoding::Utf8),
        Err(e) => (
            base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
            OutputEncoding::Base64,
        ),
    }
}

/// Whether `p` stays beneath its root (used when writing files).
pub fn is_beneath(p: &Path) -> bool {
    p.components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<Plan, ApiError> {
        plan(parse_request(json.as_bytes())?, &Bounds::default())
    }

    #[test]
    fn errors_name_the_field_and_carry_a_code() {
        let e =
            req(r#"{"language":"sh","files":[{"name":"a","content":""}],"bogus":1}"#).unwrap_err();
        assert_eq!(e.code, "unknown_field");
        assert!(e.message.contains("bogus"), "{}", e.message);
        let e =
            req(r#"{"language":"sh","files":[{"name":"a","content":"","mode":1}]}"#).unwrap_err();
        assert_eq!(e.code, "unknown_field");
        assert!(e.message.contains("files[0].mode"), "{}", e.message);
        let e = req(r#"{"language":"ruby","files":[]}"#).unwrap_err();
        assert_eq!(e.code, "unknown_language");
        assert!(e.message.starts_with("language:"), "{}", e.message);
        let e = req(r#"{"language":"sh""#).unwrap_err();
        assert_eq!(e.code, "bad_json");
        let e = req(r#"{"files":[]}"#).unwrap_err();
        assert_eq!(e.code, "missing_field");
        assert!(
            e.message
                .starts_with("missing field language (or processor)"),
            "{}",
            e.message
        );
        let e = req("[]").unwrap_err();
        assert_eq!(e.code, "invalid_field", "{}", e.message);
        let e = req(r#"{"language":"sh"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            ("missing_field", "missing field files")
        );
        let e = req(r#"{"language":"sh","processor":"p@1.0.0","files":[]}"#).unwrap_err();
        assert_eq!(e.code, "invalid_field");
        assert!(
            e.message.starts_with("language and processor:"),
            "{}",
            e.message
        );
        let e = req(r#"{"processor":"p@1.0.0","files":[{"name":"a","content":""}]}"#).unwrap_err();
        assert_eq!(e.code, "invalid_field");
        assert!(
            e.message.starts_with("files: not with processor"),
            "{}",
            e.message
        );
        for bad in ["", "-x", "--policy=/etc/p", "a b", "P@1", "é"] {
            let body = serde_json::json!({"processor": bad}).to_string();
            let e = req(&body).unwrap_err();
            assert_eq!(e.code, "invalid_field", "{bad:?}: {}", e.message);
            assert!(e.message.starts_with("processor:"), "{}", e.message);
        }
        let e = req(r#"{"language":"sh","files":[{"name":"a","content":""}],"limits":{"wall_time_ms":"x"}}"#)
            .unwrap_err();
        assert_eq!(e.code, "invalid_field");
        assert!(
            e.message.starts_with("limits.wall_time_ms:"),
            "{}",
            e.message
        );
        let e = req(
            r#"{"language":"sh","files":[{"name":"a","content":""}],"limits":{"memory_bytes":5}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, "invalid_limit");
        assert!(e.message.contains("limits.memory_bytes"), "{}", e.message);
        let e = req(
            r#"{"language":"sh","files":[{"name":"a","content":""}],"limits":{"wall_time_ms":0}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, "invalid_limit");
        let e = req(r#"{"language":"sh","files":[{"name":"a","content":""}],"capabilities":["net:http:ok.example","bogus:x"]}"#)
            .unwrap_err();
        assert_eq!(e.code, "invalid_capability");
        assert!(e.message.starts_with("capabilities[1]:"), "{}", e.message);
        let e = req(r#"{"language":"sh","files":[{"name":"a","content":""}],"capabilities":["fs:read:/etc"]}"#)
            .unwrap_err();
        assert_eq!(e.code, "invalid_capability");
    }

    #[test]
    fn file_names_stay_beneath_the_directory() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\0b",
            "a\\b",
        ] {
            assert!(check_name("f", bad).is_err(), "{bad:?} accepted");
        }
        for good in ["main.py", "src/lib/util.py", "-rf", "a..b"] {
            assert!(is_beneath(&check_name("f", good).unwrap()), "{good:?}");
        }
        let e = req(
            r#"{"language":"sh","files":[{"name":"a","content":""},{"name":"a/b","content":""}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, "invalid_file");
        let e = req(r#"{"language":"sh","files":[{"name":"a","content":""}],"entry":"b"}"#)
            .unwrap_err();
        assert_eq!(e.code, "invalid_file");
    }

    #[test]
    fn test_cases_are_bounded_and_share_the_wall_time() {
        let case = r#"{"stdin":"1","expected_stdout":"2"}"#;
        let body = |n: usize, extra: &str| {
            let cases = vec![case; n].join(",");
            format!(
                r#"{{"language":"sh","files":[{{"name":"a","content":""}}],"test_cases":[{cases}]{extra}}}"#
            )
        };
        let p = req(&body(3, "")).unwrap();
        assert_eq!(p.cases.len(), 3);
        assert_eq!(p.cases[0].stdin, b"1");
        assert_eq!(p.cases[0].expected_stdout, b"2");
        assert_eq!(p.wall_time, Duration::from_secs(10));
        assert_eq!(p.input_bytes(), 1);
        // 64 cases share the 300 s a request may run: 4687 ms each.
        let p = req(&body(64, "")).unwrap();
        assert_eq!(p.wall_time, Duration::from_millis(4687));
        let e = req(&body(65, "")).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            ("invalid_field", "test_cases: 65 test cases; at most 64")
        );
        let e = req(&body(0, "")).unwrap_err();
        assert_eq!(e.code, "invalid_field");
        let e = req(&body(64, r#","limits":{"wall_time_ms":10000}"#)).unwrap_err();
        assert_eq!(e.code, "invalid_limit");
        assert!(
            e.message.starts_with("limits.wall_time_ms: 64 test cases"),
            "{}",
            e.message
        );
        let p = req(&body(30, r#","limits":{"wall_time_ms":10000}"#)).unwrap();
        assert_eq!(p.wall_time, Duration::from_secs(10));
        let e = req(&body(1, r#","stdin":"x""#)).unwrap_err();
        assert_eq!(e.code, "invalid_field");
        assert!(e.message.starts_with("stdin:"), "{}", e.message);
        let e = req(
            r#"{"language":"sh","files":[{"name":"a","content":""}],"test_cases":[{"stdin":"1"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, "missing_field");
        assert!(
            e.message.contains("test_cases[0].expected_stdout"),
            "{}",
            e.message
        );
        let p =
            req(r#"{"processor":"upper@1.2.0","test_cases":[{"name":"a","expected_stdout":""}]}"#)
                .unwrap();
        assert_eq!(p.program, Program::Processor("upper@1.2.0".into()));
        assert_eq!(p.cases[0].name.as_deref(), Some("a"));
    }

    #[test]
    fn a_good_request_becomes_a_plan() {
        let p = req(r#"{"language":"python","files":[{"name":"m.py","content":"cHJpbnQoMSk=","encoding":"base64"}],"stdin":"x","args":["1"],"limits":{"wall_time_ms":500,"memory_bytes":67108864,"pids":8,"output_bytes":100,"cpu_time_ms":100},"capabilities":["mem:limit:64MiB"]}"#)
            .unwrap();
        assert_eq!(
            p.program,
            Program::Files {
                language: Language::Python,
                files: vec![(PathBuf::from("m.py"), b"print(1)".to_vec())],
                entry: PathBuf::from("m.py"),
            }
        );
        assert!(p.cases.is_empty());
        assert_eq!(p.wall_time, Duration::from_millis(500));
        assert_eq!(p.output_bytes, 100);
        assert_eq!(p.input_bytes(), 9);
        assert_eq!(
            encode_output(b"hi\n".to_vec()),
            ("hi\n".into(), OutputEncoding::Utf8)
        );
        assert_eq!(
            encode_output(vec![0xff]),
            ("/w==".into(), OutputEncoding::Base64)
        );
    }
}
