//! Differential tests: `Authz::decide` (per-action policy sets, a
//! two-entity slice per request) against Cedar evaluating the *exported
//! text* (policies, schema, entities) as an outside implementation would;
//! and the Cedar ceiling encoding against `Capability::subsumes`.

use std::collections::BTreeSet;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityUid, PolicySet, Request as CedarRequest, Schema,
};
use warden_authz::{
    cedar_request_json, covering_keys, within_ceiling, Action, Authz, Request, Resource,
};
use warden_policy::Capability;

/// splitmix64: a seeded, dependency-free generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn some<'a>(&mut self, items: &[&'a str], max: usize) -> Vec<&'a str> {
        let n = self.below(max + 1);
        let mut out: Vec<&str> = (0..n).map(|_| self.pick(items)).collect();
        out.dedup();
        out
    }
}

const TENANTS: [&str; 4] = ["t0", "t1", "t2", "t3"];
const PATTERNS: [&str; 9] = ["a*", "ab*", "abc", "b*", "*c", "a*c", "x", "*", "*b*"];
const NAMES: [&str; 10] = ["a", "ab", "abc", "abd", "b", "bc", "c", "x", "ac", "zzz"];
const TAGS: [&str; 3] = ["red", "blue", "green"];
const CEILING_POOL: [&str; 17] = [
    "fs:read:/data",
    "fs:write:/data/out",
    "fs:read:/",
    "net:http:api.example.com",
    "net:http:*.example.com",
    "net:connect:db.internal:5432",
    "net:connect:*:443",
    "env:HOME",
    "kv:write:*",
    "kv:read:cache",
    "mem:limit:256MiB",
    "cpu:limit:50%",
    "time:limit:30s",
    "proc:limit:4",
    "secret:db",
    "clock:read",
    "net:http:*",
];
const REQUESTED_POOL: [&str; 26] = [
    "fs:read:/data/x",
    "fs:read:/data",
    "fs:write:/data/out/y",
    "fs:read:/data/out/y",
    "fs:read:/etc",
    "net:http:api.example.com",
    "net:http:x.api.example.com",
    "net:http:example.com",
    "net:http:*.example.com",
    "net:connect:db.internal:5432",
    "net:connect:db.internal:443",
    "net:connect:db.internal:*",
    "env:HOME",
    "env:PATH",
    "kv:read:cache",
    "kv:write:cache",
    "kv:read:other",
    "mem:limit:128MiB",
    "mem:limit:1GiB",
    "cpu:limit:25%",
    "time:limit:10s",
    "time:limit:1m",
    "proc:limit:8",
    "secret:db",
    "clock:read",
    "random:read",
];
/// 2026-01-01 .. 2027-12-31: the span of generated expiries and request times.
const T0: i64 = 1_767_225_600;
const T1: i64 = 1_830_211_200;

fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

fn generate_rbac(rng: &mut Rng, principals: usize, rules: usize) -> String {
    let roles: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    let mut out = String::from("roles:\n");
    for i in 0..roles.len() {
        // Parents only among earlier roles: a DAG, never a cycle.
        let parents: BTreeSet<usize> = (0..rng.below(3))
            .filter(|_| i > 0)
            .map(|_| rng.below(i))
            .collect();
        let parents: Vec<&str> = parents.iter().map(|p| roles[*p].as_str()).collect();
        out.push_str(&format!("  r{i}: {{inherits: {}}}\n", list(&parents)));
    }
    out.push_str("bindings:\n");
    for p in 0..principals {
        for _ in 0..=rng.below(2) {
            let tenant = if rng.chance(10) {
                "*"
            } else {
                rng.pick(&TENANTS)
            };
            let role_refs: Vec<&str> = roles.iter().map(String::as_str).collect();
            let mut bound = rng.some(&role_refs, 2);
            if bound.is_empty() {
                bound.push("r0");
            }
            out.push_str(&format!(
                "  - {{principal: p{p}, tenant: \"{tenant}\", roles: {}}}\n",
                list(&bound)
            ));
        }
    }
    out.push_str("rules:\n");
    for _ in 0..rules {
        let action = Action::ALL[rng.below(Action::ALL.len())];
        let allow = rng.chance(88);
        out.push_str(&format!(
            "  - {}: {}\n    role: r{}\n",
            if allow { "allow" } else { "deny" },
            action,
            rng.below(roles.len())
        ));
        if rng.chance(50) {
            let mut patterns = rng.some(&PATTERNS, 2);
            if patterns.is_empty() {
                patterns.push("a*");
            }
            out.push_str(&format!("    resources: {}\n", list(&patterns)));
        }
        if rng.chance(25) {
            let mut when = Vec::new();
            if rng.chance(40) {
                let mut t = rng.some(&TENANTS, 2);
                t.push(rng.pick(&TENANTS));
                when.push(format!("tenant: {}", list(&t)));
            }
            if rng.chance(40) {
                let mut t = rng.some(&TAGS, 2);
                t.push(rng.pick(&TAGS));
                when.push(format!("tags: {}", list(&t)));
            }
            if rng.chance(40) {
                let (start, end) = (rng.below(24), rng.below(24));
                if start != end {
                    when.push(format!("hours: \"{start:02}:00-{end:02}:30\""));
                }
            }
            if rng.chance(40) {
                when.push(format!(
                    "max_input_bytes: {}",
                    [100, 1000, 10_000][rng.below(3)]
                ));
            }
            out.push_str(&format!("    when: {{{}}}\n", when.join(", ")));
        }
        if rng.chance(20) {
            let at = T0 + (rng.next() % (T1 - T0) as u64) as i64;
            out.push_str(&format!(
                "    expires: {}\n",
                warden_authz::format_timestamp(at - at % 60)
            ));
        }
        if rng.chance(10) && allow {
            out.push_str("    cross_tenant: true\n");
        }
        if allow && action == Action::Invoke && rng.chance(60) {
            let ceiling = rng.some(&CEILING_POOL, 3);
            out.push_str(&format!("    ceiling: {}\n", list(&ceiling)));
        }
    }
    out
}

fn generate_request(rng: &mut Rng, principals: usize) -> Request {
    let action = Action::ALL[rng.below(Action::ALL.len())];
    let tenant = rng.pick(&TENANTS).to_owned();
    let resource_tenant = if rng.chance(90) {
        tenant.clone()
    } else {
        rng.pick(&TENANTS).to_owned()
    };
    let name = match action.resource_kind() {
        warden_authz::ResourceKind::Tenant => rng.pick(&TENANTS).to_owned(),
        _ => rng.pick(&NAMES).to_owned(),
    };
    let principal = if rng.chance(5) {
        "ghost".to_owned()
    } else {
        format!("p{}", rng.below(principals))
    };
    let mut resource = Resource::new(action.resource_kind(), name, resource_tenant);
    resource.tags = rng.some(&TAGS, 2).into_iter().map(str::to_owned).collect();
    let caps = if action == Action::Invoke {
        rng.some(&REQUESTED_POOL, 3)
    } else {
        Vec::new()
    };
    Request {
        principal,
        tenant,
        action,
        resource,
        capabilities: caps.into_iter().map(str::to_owned).collect(),
        input_bytes: [0, 50, 500, 5_000, 50_000][rng.below(5)],
        now: T0 - 86_400 + (rng.next() % (T1 - T0 + 2 * 86_400) as u64) as i64,
    }
}

/// An outside Cedar implementation: only the exported text and the
/// documented request shape.
struct Outside {
    policies: PolicySet,
    schema: Schema,
    entities: Entities,
}

impl Outside {
    fn from_export(authz: &Authz) -> Outside {
        let export = authz.export_cedar();
        let policies: PolicySet = export.policies.parse().expect("exported policies parse");
        let (schema, _) =
            Schema::from_cedarschema_str(&export.schema).expect("exported schema parses");
        let entities = Entities::from_json_str(&export.entities, Some(&schema))
            .expect("exported entities parse");
        Outside {
            policies,
            schema,
            entities,
        }
    }

    /// (allowed, ids of the deciding rules from their `@id` annotations).
    fn decide(&self, request: &Request) -> (bool, BTreeSet<String>) {
        let json = cedar_request_json(request).expect("request JSON");
        let uid = |key: &str| EntityUid::from_json(json[key].clone()).expect("uid");
        let action = uid("action");
        let context =
            Context::from_json_value(json["context"].clone(), Some((&self.schema, &action)))
                .expect("context conforms to the schema");
        let cedar_request = CedarRequest::new(
            uid("principal"),
            action,
            uid("resource"),
            context,
            Some(&self.schema),
        )
        .expect("request conforms to the schema");
        let resource = Entity::from_json_value(json["resource_entity"].clone(), Some(&self.schema))
            .expect("resource entity");
        let entities = if self.entities.get(&resource.uid()).is_some() {
            self.entities.clone()
        } else {
            self.entities
                .clone()
                .add_entities([resource], Some(&self.schema))
                .expect("add resource")
        };
        let response = Authorizer::new().is_authorized(&cedar_request, &self.policies, &entities);
        let ids = response
            .diagnostics()
            .reason()
            .map(|id| self.policies.annotation(id, "id").expect("@id").to_owned())
            .collect();
        assert_eq!(response.diagnostics().errors().count(), 0, "{request:?}");
        (response.decision() == cedar_policy::Decision::Allow, ids)
    }
}

#[test]
fn decide_agrees_with_cedar_on_the_exported_text() {
    let mut totals = [0usize; 3]; // allowed, denied by a rule, denied by default
    for seed in 1..=4u64 {
        let mut rng = Rng(seed);
        let source = generate_rbac(&mut rng, 30, 200);
        let authz =
            Authz::load(&source, "generated.yaml").unwrap_or_else(|d| panic!("{d:#?}\n{source}"));
        let outside = Outside::from_export(&authz);
        for _ in 0..300 {
            let request = generate_request(&mut rng, 30);
            let decision = authz.decide(&request);
            let ours: BTreeSet<String> = decision.deciding.iter().map(|r| r.id.clone()).collect();
            let theirs = outside.decide(&request);
            assert_eq!(
                (decision.allowed, ours.clone()),
                theirs,
                "seed {seed}: {request:#?}\n{}",
                decision.reason
            );
            totals[if decision.allowed {
                0
            } else if ours.is_empty() {
                2
            } else {
                1
            }] += 1;
        }
    }
    // The table exercises every outcome, not just default denies.
    assert!(totals.iter().all(|n| *n >= 100), "{totals:?}");
    eprintln!("allowed, denied by a rule, denied by default: {totals:?}");
}

#[test]
fn the_cedar_ceiling_means_subsumption() {
    let mut rng = Rng(42);
    let (mut within, mut outside) = (0, 0);
    for _ in 0..300 {
        let ceiling = rng.some(&CEILING_POOL, 4);
        let requested = rng.some(&REQUESTED_POOL, 4);
        let source = format!(
            "roles: {{ops: {{}}}}\nbindings: [{{principal: p, tenant: t, roles: [ops]}}]\nrules:\n  - {{allow: invoke, role: ops, ceiling: {}}}\n",
            list(&ceiling)
        );
        let authz = Authz::load(&source, "c.yaml").unwrap();
        let mut request = Request {
            principal: "p".into(),
            tenant: "t".into(),
            action: Action::Invoke,
            resource: Resource::new(warden_authz::ResourceKind::Processor, "x", "t"),
            capabilities: requested.iter().map(|c| (*c).to_owned()).collect(),
            input_bytes: 0,
            now: T0,
        };
        let parse = |items: &[&str]| -> Vec<Capability> {
            items.iter().map(|c| c.parse().unwrap()).collect()
        };
        let expected = within_ceiling(&parse(&requested), &parse(&ceiling));
        assert_eq!(
            authz.decide(&request).allowed,
            expected,
            "ceiling {ceiling:?}, requested {requested:?}"
        );
        if expected {
            within += 1
        } else {
            outside += 1
        }
        request.capabilities.reverse();
        assert_eq!(
            authz.decide(&request).allowed,
            expected,
            "order does not matter"
        );
    }
    assert!(
        within >= 50 && outside >= 50,
        "{within} within, {outside} outside"
    );
}

#[test]
fn covering_keys_are_exactly_the_subsuming_capabilities() {
    let extra = [
        "fs:read:/data/x/../y",
        "fs:read:rel/path",
        "fs:write:rel",
        "fs:read:..",
        "fs:read:../up",
        "fs:read:.",
        "net:http:[::1]",
        "net:http:10.0.0.1",
        "net:connect:10.0.0.1:80",
        "net:connect:[::1]:*",
        "net:connect:*.internal:5432",
        "net:http:*.api.example.com",
        "kv:read:*",
        "kv:write:cache",
        "module:call:parser",
        "log:write",
    ];
    let all: Vec<Capability> = CEILING_POOL
        .iter()
        .chain(REQUESTED_POOL.iter())
        .chain(extra.iter())
        .map(|c| c.parse().unwrap())
        .filter(|c: &Capability| !c.is_limit())
        .collect();
    for requested in &all {
        let keys = covering_keys(requested);
        assert_eq!(
            keys[0],
            requested.to_string(),
            "a capability covers itself first"
        );
        for ceiling in &all {
            assert_eq!(
                keys.contains(&ceiling.to_string()),
                ceiling.subsumes(requested),
                "{ceiling} over {requested}: keys {keys:?}"
            );
        }
    }
}
