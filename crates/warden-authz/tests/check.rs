//! `warden authz check`: each diagnostic at its exact line and column.

use warden_authz::{check_at, parse_timestamp, Authz};

/// 2026-06-01T00:00Z.
fn june() -> i64 {
    parse_timestamp("2026-06-01").unwrap()
}

fn rendered(source: &str) -> Vec<String> {
    check_at(source, "rbac.yaml", june())
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_clean_file_has_no_diagnostics() {
    let source = "\
roles:
  viewer: {}
  operator: {inherits: [viewer]}
bindings:
  - {principal: alice, tenant: acme, roles: [operator]}
rules:
  - {allow: invoke, role: operator, resources: [\"parser*\"], ceiling: [fs:read:/data]}
  - {deny: processor.rm, role: viewer}
";
    assert_eq!(rendered(source), Vec::<String>::new());
    assert!(Authz::load(source, "rbac.yaml")
        .unwrap()
        .warnings()
        .is_empty());
}

#[test]
fn unknown_roles_actions_and_keys() {
    let source = "\
roles:
  viewer: {inherits: [nobody]}
  operator: {inherit: [viewer]}
bindings:
  - {principal: alice, tenant: acme, roles: [operatr]}
  - {principal: bob, roles: [viewer]}
rules:
  - allow: invoke
    role: opertor
  - deny: processor.delete
    role: viewer
  - allow: invoke
    role: viewer
    resource: [x]
";
    assert_eq!(
        rendered(source),
        [
            "rbac.yaml:2:23: error: unknown role \"nobody\"",
            "rbac.yaml:3:14: error: unknown key \"inherit\" in role \"operator\": expected inherits",
            "rbac.yaml:5:46: error: unknown role \"operatr\"",
            "rbac.yaml:6:5: error: a binding needs a tenant (a tenant name, or \"*\" for every tenant)",
            "rbac.yaml:9:11: error: unknown role \"opertor\"",
            "rbac.yaml:10:11: error: unknown action \"processor.delete\": expected one of invoke, processor.add, processor.rm, secret.put, secret.read, lease.revoke, policy.change, trust.change, audit.read, audit.export, audit.reveal, tenant.admin",
            "rbac.yaml:14:5: error: unknown key \"resource\" in rules[2]: expected allow, deny, role, resources, ceiling, when, expires, cross_tenant",
        ]
    );
    let errors = Authz::load(source, "rbac.yaml").unwrap_err();
    assert_eq!(errors.len(), 7);
}

#[test]
fn inheritance_cycles() {
    let source = "\
roles:
  a: {inherits: [b]}
  b: {inherits: [c]}
  c: {inherits: [a]}
  d: {inherits: [d]}
  e: {inherits: [a]}
rules:
  - {allow: audit.read, role: e}
";
    assert_eq!(
        rendered(source),
        [
            "rbac.yaml:4:18: error: inheritance cycle: a inherits b inherits c inherits a",
            "rbac.yaml:5:18: error: inheritance cycle: d inherits d",
        ]
    );
}

#[test]
fn rules_that_can_never_fire_or_add_nothing() {
    let source = "\
roles:
  viewer: {}
  operator: {inherits: [viewer]}
rules:
  - {deny: processor.rm, role: viewer, resources: [\"prod-*\"]}
  - {allow: processor.rm, role: operator, resources: [prod-db]}
  - {allow: processor.rm, role: operator, resources: [\"prod-*\", \"dev-*\"]}
  - {allow: invoke, role: viewer, resources: [\"*\"]}
  - {allow: invoke, role: operator, resources: [\"parser*\"], ceiling: [fs:read:/data]}
  - {allow: invoke, role: viewer, resources: [\"*\"]}
  - {allow: secret.read, role: viewer, resources: [\"db-*\"], when: {tags: [x]}}
  - {allow: secret.read, role: operator, resources: [db-1]}
  - {deny: secret.put, role: viewer, when: {hours: \"08:00-18:00\"}}
  - {allow: secret.put, role: viewer}
";
    assert_eq!(
        rendered(source),
        [
            "rbac.yaml:6:5: warning: rules[1] can never fire: rules[0] at line 5 denies processor.rm to role \"viewer\" on prod-* without conditions",
            "rbac.yaml:9:5: warning: rules[4] is redundant: rules[3] at line 8 already allows invoke to role \"viewer\" on * without conditions",
            "rbac.yaml:10:5: warning: rules[5] is redundant: rules[3] at line 8 already allows invoke to role \"viewer\" on * without conditions",
        ]
    );
    // Warnings do not stop a load.
    let authz = Authz::load(source, "rbac.yaml").unwrap();
    assert_eq!(authz.warnings().len(), 3);
}

#[test]
fn expired_overrides() {
    let source = "\
roles: {ops: {}}
rules:
  - allow: secret.read
    role: ops
    expires: 2026-05-31T23:59Z
  - allow: secret.put
    role: ops
    expires: 2026-06-01T00:01Z
  - allow: lease.revoke
    role: ops
    expires: next tuesday
";
    assert_eq!(
        rendered(source),
        [
            "rbac.yaml:5:14: warning: rules[0] expired at 2026-05-31T23:59Z: it no longer applies",
            "rbac.yaml:11:14: error: invalid expires \"next tuesday\": expected a UTC time like 2026-12-31T00:00Z or a date like 2026-12-31",
        ]
    );
}

#[test]
fn bad_ceilings_and_conditions() {
    let source = "\
roles: {ops: {}}
rules:
  - allow: invoke
    role: ops
    ceiling: [fs:read:/data, net:http:api.example.com:443, fs:exec:/bin]
  - allow: secret.read
    role: ops
    ceiling: [secret:db]
  - allow: invoke
    role: ops
    resources: [\"parser$\"]
    when: {hours: 8-18, max_input_bytes: lots, weekday: monday, tenant: [\"a/b\"]}
    cross_tenant: yes
";
    assert_eq!(
        rendered(source),
        [
            "rbac.yaml:5:30: error: invalid ceiling capability: malformed capability \"net:http:api.example.com:443\": invalid host \"api.example.com:443\": net:http takes a host only (no port); IPv6 addresses must be written in brackets",
            "rbac.yaml:5:60: error: invalid ceiling capability: malformed capability \"fs:exec:/bin\": unknown fs access \"exec\": expected read or write",
            "rbac.yaml:8:14: error: a capability ceiling applies only to `allow: invoke` rules",
            "rbac.yaml:11:17: error: invalid resource pattern \"parser$\": expected 1 to 256 ASCII letters, digits and any of \"_.-/:@*\"",
            "rbac.yaml:12:19: error: invalid hours \"8-18\": expected HH:MM-HH:MM (UTC), e.g. 08:00-18:00",
            "rbac.yaml:12:42: error: invalid max_input_bytes \"lots\": invalid size \"lots\": expected a number followed by an optional unit (B, KB, KiB, MB, MiB, GB, GiB)",
            "rbac.yaml:12:48: error: unknown key \"weekday\" in `when` of rules[2]: expected tenant, tags, hours, max_input_bytes",
            "rbac.yaml:12:74: error: invalid tenant \"a/b\": expected ASCII letters, digits, '_' and any of \".-\", starting with a letter, digit or '_'",
            "rbac.yaml:13:19: error: cross_tenant must be true or false, not \"yes\"",
        ]
    );
}

#[test]
fn structure_and_syntax() {
    assert_eq!(
        rendered("roles: {a: {}}\nrules: [{allow: invoke, role: a}\n"),
        ["rbac.yaml:2:8: error: invalid YAML: unclosed bracket '['"]
    );
    assert_eq!(
        rendered("roles: [a]\nrules: {allow: invoke}\nbindings: x\ngroups: {}\n"),
        [
            "rbac.yaml:1:8: error: roles must be a mapping of role names, not a list",
            "rbac.yaml:2:8: error: rules must be a list, not a mapping",
            "rbac.yaml:3:11: error: bindings must be a list, not a scalar",
            "rbac.yaml:4:1: error: unknown key \"groups\" in the RBAC file: expected os_users, roles, bindings, rules",
        ]
    );
    assert_eq!(
        rendered(
            "roles: {a: {}}\nrules:\n  - {allow: invoke, deny: invoke, role: a}\n  - {role: a}\n"
        ),
        [
            "rbac.yaml:3:27: error: rules[0] has both allow and deny: write two rules",
            "rbac.yaml:4:5: error: rules[1] needs `allow: ACTION` or `deny: ACTION`",
        ]
    );
    assert_eq!(
        rendered("os_users: {root: admin}\nroles: {a: {}, a: {}}\n"),
        [
            "rbac.yaml:1:18: warning: principal \"admin\" (for OS user \"root\") has no bindings: every request is denied",
            "rbac.yaml:2:16: error: role \"a\" is defined twice",
        ]
    );
    assert_eq!(
        rendered("roles: {a: {}}\n"),
        ["rbac.yaml:1:1: warning: the file has no rules: every request is denied"]
    );
    // Anchors are refused (the located YAML parser is hostile-input safe).
    let with_alias = "roles: {a: &x {}}\nrules: []\n";
    assert!(rendered(with_alias)[0].contains("anchors and aliases are not allowed"));
}
