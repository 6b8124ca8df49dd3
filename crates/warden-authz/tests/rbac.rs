//! Decisions: allow, deny, deny wins, inheritance, overrides, ceilings,
//! conditions, tenant isolation, `explain` and `authz test` cases.

use warden_authz::{parse_timestamp, Action, Authz, Effect, Request, Resource, ResourceKind};

const RBAC: &str = r#"
os_users: {root: admin, ci: robot}
roles:
  viewer: {}
  operator: {inherits: [viewer]}
  admin: {inherits: [operator]}
  auditor: {inherits: [viewer]}
  robot:
bindings:
  - {principal: alice, tenant: acme, roles: [operator]}
  - {principal: bob, tenant: acme, roles: [viewer]}
  - {principals: [carol, dave], tenant: globex, roles: [operator]}
  - {principal: admin, tenant: "*", roles: [admin]}
  - {principal: erin, tenant: acme, roles: [auditor]}
  - {principal: erin, tenant: globex, roles: [operator]}
  - {principal: robot, tenant: acme, roles: [robot]}
rules:
  - allow: invoke
    role: operator
    resources: ["parser*"]
    ceiling: [fs:read:/data, net:http:api.example.com, mem:limit:256MiB]
  - allow: invoke
    role: robot
    resources: ["batch-*"]
    when: {tenant: acme, tags: [approved], hours: "08:00-18:00", max_input_bytes: 1MiB}
  - allow: invoke
    role: robot
    resources: ["night-*"]
    when: {hours: "22:00-06:00"}
  - allow: processor.rm
    role: viewer
    resources: ["tmp-*", "scratch"]
  - deny: processor.rm
    role: operator
    resources: ["*"]
  - allow: secret.read
    role: operator
    resources: ["db-*"]
    expires: 2026-12-31T00:00Z
  - deny: secret.read
    role: operator
    resources: ["db-root"]
  - allow: audit.read
    role: viewer
  - allow: audit.reveal
    role: auditor
  - allow: tenant.admin
    role: admin
    cross_tenant: true
  - allow: secret.put
    role: operator
    resources: ["tmp-*"]
"#;

/// 2026-06-01T10:00Z, before the override lapses, within working hours.
const JUNE: i64 = 1_780_308_000;

fn authz() -> Authz {
    Authz::load(RBAC, "rbac.yaml").unwrap_or_else(|d| panic!("{d:#?}"))
}

fn request(principal: &str, tenant: &str, action: Action, name: &str) -> Request {
    Request {
        principal: principal.to_owned(),
        tenant: tenant.to_owned(),
        action,
        resource: Resource::new(action.resource_kind(), name, tenant),
        capabilities: Vec::new(),
        input_bytes: 0,
        now: JUNE,
    }
}

fn with_caps(mut r: Request, caps: &[&str]) -> Request {
    r.capabilities = caps.iter().map(|c| (*c).to_owned()).collect();
    r
}

fn deciding(authz: &Authz, r: &Request) -> (bool, Vec<String>) {
    let d = authz.decide(r);
    (d.allowed, d.deciding.into_iter().map(|r| r.id).collect())
}

#[test]
fn allow_cites_the_rule_with_its_position() {
    let authz = authz();
    let d = authz.decide(&request("alice", "acme", Action::Invoke, "parser-1"));
    assert!(d.allowed, "{}", d.reason);
    assert_eq!(d.deciding.len(), 1);
    let rule = &d.deciding[0];
    assert_eq!(
        (rule.id.as_str(), rule.file.as_str(), rule.line, rule.column),
        ("rules[0]", "rbac.yaml", 18, 5)
    );
    assert_eq!(rule.effect, Effect::Allow);
    assert!(
        d.reason.contains("rules[0] (rbac.yaml:18:5)"),
        "{}",
        d.reason
    );
}

#[test]
fn nothing_is_allowed_unless_a_rule_allows_it() {
    let authz = authz();
    for r in [
        request("alice", "acme", Action::Invoke, "other"),
        request("alice", "acme", Action::PolicyChange, "acme"),
        request("nobody", "acme", Action::AuditRead, "acme"),
        request("bob", "acme", Action::Invoke, "parser-1"),
    ] {
        let d = authz.decide(&r);
        assert!(!d.allowed, "{r:?}");
        assert!(d.deciding.is_empty());
        assert!(d.reason.starts_with("no rule allows"), "{}", d.reason);
    }
}

#[test]
fn inheritance_passes_permissions_up() {
    let authz = authz();
    // viewer's audit.read reaches operator (alice) and admin.
    for who in ["bob", "alice", "admin"] {
        let (allowed, rules) = deciding(&authz, &request(who, "acme", Action::AuditRead, "acme"));
        assert!(allowed, "{who}");
        assert_eq!(rules, ["rules[7]"]);
    }
    // admin inherits operator's invoke; auditor does not (sibling of operator).
    assert!(
        authz
            .decide(&request("admin", "acme", Action::Invoke, "parser-x"))
            .allowed
    );
    assert!(
        !authz
            .decide(&request("erin", "acme", Action::Invoke, "parser-x"))
            .allowed
    );
    // An inherited role does not gain its heirs' rights.
    assert!(
        !authz
            .decide(&request("bob", "acme", Action::SecretPut, "tmp-1"))
            .allowed
    );
}

#[test]
fn deny_wins_over_allow_and_is_inherited() {
    let authz = authz();
    // viewer may remove tmp-*; bob is a viewer.
    assert!(
        authz
            .decide(&request("bob", "acme", Action::ProcessorRm, "tmp-1"))
            .allowed
    );
    assert!(
        authz
            .decide(&request("bob", "acme", Action::ProcessorRm, "scratch"))
            .allowed
    );
    assert!(
        !authz
            .decide(&request("bob", "acme", Action::ProcessorRm, "scratch2"))
            .allowed
    );
    // alice is an operator (a viewer too) but operators are denied processor.rm.
    for who in ["alice", "admin"] {
        let d = authz.decide(&request(who, "acme", Action::ProcessorRm, "tmp-1"));
        assert!(!d.allowed);
        let ids: Vec<&str> = d.deciding.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["rules[4]"], "{who}");
        assert_eq!(d.deciding[0].effect, Effect::Deny);
        assert!(
            d.reason.starts_with("denied by rules[4] (rbac.yaml:33:5)"),
            "{}",
            d.reason
        );
    }
    // A narrow deny inside a broad allow.
    assert!(
        authz
            .decide(&request("alice", "acme", Action::SecretRead, "db-app"))
            .allowed
    );
    let (allowed, rules) = deciding(
        &authz,
        &request("alice", "acme", Action::SecretRead, "db-root"),
    );
    assert!(!allowed);
    assert_eq!(rules, ["rules[6]"]);
}

#[test]
fn overrides_lapse_on_their_own() {
    let authz = authz();
    let expires = parse_timestamp("2026-12-31T00:00Z").unwrap();
    let mut r = request("alice", "acme", Action::SecretRead, "db-app");
    r.now = expires - 1;
    let d = authz.decide(&r);
    assert!(d.allowed);
    let used: Vec<&str> = d.overrides_used().map(|r| r.id.as_str()).collect();
    assert_eq!(used, ["rules[5]"]);
    assert_eq!(d.deciding[0].expires, Some(expires));
    r.now = expires;
    assert!(!authz.decide(&r).allowed, "lapsed at its expiry");
    r.now = expires + 86_400;
    assert!(!authz.decide(&r).allowed);
    // The engine audits grants and lapses from these.
    let overrides: Vec<&str> = authz.overrides().map(|r| r.id.as_str()).collect();
    assert_eq!(overrides, ["rules[5]"]);
    assert_eq!(authz.lapsed_between(expires - 10, expires).count(), 1);
    assert_eq!(authz.lapsed_between(expires, expires + 10).count(), 0);
}

#[test]
fn ceiling_bounds_invoke_capabilities() {
    let authz = authz();
    let r = |caps: &[&str]| with_caps(request("alice", "acme", Action::Invoke, "parser-1"), caps);
    let allowed = |caps: &[&str]| authz.decide(&r(caps)).allowed;
    // Within: below a path, the exact host, a smaller limit, several at once.
    assert!(allowed(&[]));
    assert!(allowed(&["fs:read:/data"]));
    assert!(allowed(&["fs:read:/data/in/x.csv"]));
    assert!(allowed(&["net:http:api.example.com"]));
    assert!(allowed(&["mem:limit:100MB"]));
    assert!(allowed(&[
        "fs:read:/data/a",
        "fs:read:/data/b",
        "net:http:api.example.com",
        "mem:limit:256MiB"
    ]));
    // Outside: write, a sibling path, another host, a wildcard, a larger limit,
    // another kind of limit, and one bad capability among good ones.
    assert!(!allowed(&["fs:write:/data"]));
    assert!(!allowed(&["fs:read:/database"]));
    assert!(!allowed(&["fs:read:/"]));
    assert!(!allowed(&["net:http:evil.example.com"]));
    assert!(!allowed(&["net:http:*.example.com"]));
    assert!(!allowed(&["mem:limit:1GiB"]));
    assert!(!allowed(&["cpu:limit:50%"]));
    assert!(!allowed(&[
        "fs:read:/data/a",
        "net:http:api.example.com",
        "env:HOME"
    ]));
    // A malformed capability is refused, naming the problem.
    let d = authz.decide(&r(&["fs:exec:/bin"]));
    assert!(!d.allowed);
    assert!(
        d.reason.contains("invalid requested capability"),
        "{}",
        d.reason
    );
}

#[test]
fn more_capabilities_than_slots_fall_outside_every_ceiling() {
    let authz = authz();
    let caps: Vec<String> = (0..=warden_authz::CAPABILITY_SLOTS)
        .map(|i| format!("fs:read:/data/{i}"))
        .collect();
    let refs: Vec<&str> = caps.iter().map(String::as_str).collect();
    // All within /data, but reduction keeps them all (none subsumes another).
    let d = authz.decide(&with_caps(
        request("alice", "acme", Action::Invoke, "parser-1"),
        &refs,
    ));
    assert!(!d.allowed);
    // With the parent itself requested, the rest are subsumed and dropped.
    let mut refs = refs;
    refs.push("fs:read:/data");
    let d = authz.decide(&with_caps(
        request("alice", "acme", Action::Invoke, "parser-1"),
        &refs,
    ));
    assert!(d.allowed, "{}", d.reason);
}

#[test]
fn conditions_on_tenant_tags_hours_and_input_size() {
    let authz = authz();
    let base = || {
        let mut r = request("robot", "acme", Action::Invoke, "batch-1");
        r.resource.tags = vec!["approved".into(), "nightly".into()];
        r.input_bytes = 1 << 20;
        r
    };
    assert!(
        authz.decide(&base()).allowed,
        "{}",
        authz.decide(&base()).reason
    );
    let mut r = base();
    r.resource.tags = vec!["nightly".into()];
    assert!(!authz.decide(&r).allowed, "missing tag");
    let mut r = base();
    r.input_bytes = (1 << 20) + 1;
    assert!(!authz.decide(&r).allowed, "input too large");
    for (clock, allowed) in [
        ("07:59", false),
        ("08:00", true),
        ("17:59", true),
        ("18:00", false),
    ] {
        let mut r = base();
        r.now = parse_timestamp(&format!("2026-06-01T{clock}Z")).unwrap();
        assert_eq!(authz.decide(&r).allowed, allowed, "{clock}");
    }
    // A window across midnight.
    for (clock, allowed) in [
        ("21:59", false),
        ("22:00", true),
        ("03:00", true),
        ("06:00", false),
    ] {
        let mut r = request("robot", "acme", Action::Invoke, "night-job");
        r.now = parse_timestamp(&format!("2026-06-01T{clock}Z")).unwrap();
        assert_eq!(authz.decide(&r).allowed, allowed, "{clock}");
    }
    // The tenant condition: robot bound in globex would not match `tenant: acme`.
    let rbac = RBAC.replace(
        "  - {principal: robot, tenant: acme, roles: [robot]}",
        "  - {principal: robot, tenant: \"*\", roles: [robot]}",
    );
    let authz = Authz::load(&rbac, "rbac.yaml").unwrap();
    let mut r = base();
    assert!(authz.decide(&r).allowed);
    r.tenant = "globex".into();
    r.resource.tenant = "globex".into();
    assert!(!authz.decide(&r).allowed);
}

#[test]
fn tenants_are_isolated() {
    let authz = authz();
    // carol is an operator in globex; acme's processors are not hers.
    let mut r = request("carol", "globex", Action::Invoke, "parser-1");
    assert!(authz.decide(&r).allowed);
    r.resource.tenant = "acme".into();
    let d = authz.decide(&r);
    assert!(!d.allowed);
    assert!(d.reason.contains("tenants are isolated"), "{}", d.reason);
    // alice acting in globex has no roles there.
    assert!(
        !authz
            .decide(&request("alice", "globex", Action::Invoke, "parser-1"))
            .allowed
    );
    // erin has different roles per tenant: operator in globex, auditor in acme.
    assert!(
        authz
            .decide(&request("erin", "globex", Action::Invoke, "parser-1"))
            .allowed
    );
    assert!(
        !authz
            .decide(&request("erin", "acme", Action::Invoke, "parser-1"))
            .allowed
    );
    assert!(
        authz
            .decide(&request("erin", "acme", Action::AuditReveal, "acme"))
            .allowed
    );
    assert!(
        !authz
            .decide(&request("erin", "globex", Action::AuditReveal, "globex"))
            .allowed
    );
    // Tenant-wide actions: the tenant is the resource, owned by itself.
    let mut r = request("bob", "acme", Action::AuditRead, "globex");
    r.resource.tenant = "acme".into(); // ignored for tenants
    assert!(!authz.decide(&r).allowed);
    // Secrets and leases too.
    let mut r = request("carol", "globex", Action::SecretPut, "tmp-key");
    assert!(authz.decide(&r).allowed);
    r.resource.tenant = "acme".into();
    assert!(!authz.decide(&r).allowed);
    // Only an explicit cross_tenant rule reaches another tenant.
    for tenant in ["acme", "globex", "initech"] {
        let mut r = request("admin", "acme", Action::TenantAdmin, tenant);
        assert!(authz.decide(&r).allowed, "{tenant}");
        r.tenant = "initech".into();
        assert!(authz.decide(&r).allowed, "admin is bound in every tenant");
    }
    // A tenant name that could forge an entity id is refused.
    let mut r = request("alice", "acme", Action::Invoke, "parser-1");
    r.resource.tenant = "acme/x".into();
    assert!(!authz.decide(&r).allowed);
}

#[test]
fn action_and_resource_kind_must_agree() {
    let authz = authz();
    let mut r = request("alice", "acme", Action::Invoke, "parser-1");
    r.resource.kind = ResourceKind::Secret;
    let d = authz.decide(&r);
    assert!(!d.allowed);
    assert_eq!(d.reason, "invoke applies to a processor, not a secret");
}

#[test]
fn os_users_map_to_principals() {
    let authz = authz();
    assert_eq!(authz.os_principal("root"), Some("admin"));
    assert_eq!(authz.os_principal("ci"), Some("robot"));
    assert_eq!(authz.os_principal("mallory"), None);
}

#[test]
fn explain_prints_the_decision_and_the_rules() {
    let authz = authz();
    let r = with_caps(
        request("alice", "acme", Action::Invoke, "parser-1"),
        &["fs:read:/data/x"],
    );
    let text = authz.explain(&r);
    assert_eq!(
        text,
        "allow: alice (tenant acme) invoke processor \"parser-1\" of tenant acme\n  \
         capabilities: fs:read:/data/x\n  \
         reason: allowed by rules[0] (rbac.yaml:18:5)\n  \
         rbac.yaml:18:5: rules[0]: allow invoke to role operator on parser* with at most [fs:read:/data, net:http:api.example.com, mem:limit:256MiB]\n"
    );
    let mut r = request("alice", "acme", Action::SecretRead, "db-app");
    let text = authz.explain(&r);
    assert!(
        text.contains("override, lapses at 2026-12-31T00:00Z"),
        "{text}"
    );
    r.resource.name = "db-root".into();
    let text = authz.explain(&r);
    assert!(text.starts_with("deny: "), "{text}");
    assert!(
        text.contains("rbac.yaml:40:5: rules[6]: deny secret.read to role operator on db-root"),
        "{text}"
    );
}

#[test]
fn cases_file_runs_a_table_of_expectations() {
    let authz = authz();
    let cases = r#"
- {principal: alice, tenant: acme, action: invoke, resource: parser-1, capabilities: [fs:read:/data], now: 2026-06-01T10:00Z, expect: allow}
- {principal: alice, tenant: acme, action: invoke, resource: parser-1, capabilities: [fs:write:/data], now: 2026-06-01T10:00Z, expect: deny}
- principal: robot
  tenant: acme
  action: invoke
  resource: batch-7
  tags: [approved]
  input_bytes: 512KiB
  now: 2026-06-01T12:00Z
  expect: allow
- {principal: alice, tenant: acme, action: secret.read, resource: db-app, now: 2027-01-01, expect: allow}
- {principal: carol, tenant: globex, action: invoke, resource: parser-1, resource_tenant: acme, now: 0, expect: deny}
"#;
    let results = authz.run_cases(cases, "cases.yaml").unwrap();
    let passed: Vec<bool> = results.iter().map(|r| r.passed()).collect();
    assert_eq!(passed, [true, true, true, false, true]);
    assert_eq!((results[3].line, results[3].column), (12, 3));
    assert!(!results[3].decision.allowed);

    let bad = "- {principal: alice, tenant: acme, action: invoke.all, resource: x, expect: maybe, colour: red}\n";
    let errors = authz.run_cases(bad, "cases.yaml").unwrap_err();
    let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            "cases.yaml:1:44: error: unknown action \"invoke.all\": expected one of invoke, processor.add, processor.rm, secret.put, secret.read, lease.revoke, policy.change, trust.change, audit.read, audit.export, audit.reveal, tenant.admin",
            "cases.yaml:1:77: error: expect must be allow or deny, not \"maybe\"",
            "cases.yaml:1:84: error: unknown key \"colour\" in a case: expected principal, tenant, action, resource, resource_tenant, tags, capabilities, input_bytes, now, expect",
        ]
    );
}
