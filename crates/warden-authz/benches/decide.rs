//! One authorization decision with 1,000 rules and 10,000 principals
//! (generated); the bar is a median under 50 µs. Run with
//! `bench/authz/run.sh` or `cargo bench -p warden-authz --bench decide`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use warden_authz::{Action, Authz, Request, Resource};

const ROLES: usize = 100;
const TENANTS: usize = 20;
const PRINCIPALS: usize = 10_000;
const RULES: usize = 1_000;
/// 2026-06-01T10:00Z.
const NOW: i64 = 1_780_308_000;

/// An RBAC file of the benchmark's size: roles in inheritance chains of
/// ten, each principal bound to two roles in one tenant, rules spread over
/// every action with patterns, conditions, ceilings, denies and overrides.
fn rbac() -> String {
    let mut out = String::from("roles:\n");
    for r in 0..ROLES {
        if r % 10 == 0 {
            out.push_str(&format!("  r{r}: {{}}\n"));
        } else {
            out.push_str(&format!("  r{r}: {{inherits: [r{}]}}\n", r - 1));
        }
    }
    out.push_str("bindings:\n");
    // Principals bound in groups: one binding per (tenant, role pair).
    let mut groups: std::collections::BTreeMap<(usize, usize, usize), Vec<String>> =
        Default::default();
    for p in 0..PRINCIPALS {
        let key = (p % TENANTS, (p * 7) % ROLES, (p * 13 + 5) % ROLES);
        groups.entry(key).or_default().push(format!("u{p}"));
    }
    for ((tenant, a, b), principals) in groups {
        out.push_str(&format!(
            "  - {{tenant: t{tenant}, roles: [r{a}, r{b}], principals: [{}]}}\n",
            principals.join(", ")
        ));
    }
    out.push_str("rules:\n");
    for k in 0..RULES {
        let action = Action::ALL[k % Action::ALL.len()];
        let effect = if k % 5 == 4 { "deny" } else { "allow" };
        out.push_str(&format!(
            "  - {effect}: {action}\n    role: r{}\n    resources: [\"svc{}-*\", \"job{}\"]\n",
            (k * 31) % ROLES,
            k % 50,
            k
        ));
        if k % 3 == 0 {
            out.push_str(
                "    when: {tags: [approved], hours: \"06:00-22:00\", max_input_bytes: 1MiB}\n",
            );
        }
        if k % 17 == 0 {
            out.push_str("    expires: 2027-01-01T00:00Z\n");
        }
        if effect == "allow" && action == Action::Invoke {
            out.push_str(
                "    ceiling: [fs:read:/data, fs:write:/tmp/out, net:http:*.example.com, mem:limit:256MiB, time:limit:30s]\n",
            );
        }
    }
    out
}

fn invoke(principal: usize, processor: &str) -> Request {
    let tenant = format!("t{}", principal % TENANTS);
    let mut resource = Resource::new(Action::Invoke.resource_kind(), processor, tenant.clone());
    resource.tags = vec!["approved".into()];
    Request {
        principal: format!("u{principal}"),
        tenant,
        action: Action::Invoke,
        resource,
        capabilities: vec![
            "fs:read:/data/in".into(),
            "net:http:api.example.com".into(),
            "mem:limit:64MiB".into(),
        ],
        input_bytes: 4096,
        now: NOW,
    }
}

fn bench(c: &mut Criterion) {
    let source = rbac();
    let started = Instant::now();
    let authz = Authz::load(&source, "bench.yaml").expect("the generated file loads");
    eprintln!(
        "loaded {} rules, {PRINCIPALS} principals ({} KiB of YAML) in {:.0} ms",
        authz.rules().len(),
        source.len() / 1024,
        started.elapsed().as_secs_f64() * 1e3
    );
    // An allowed and a denied request, found once outside the timing.
    let allowed = (0..PRINCIPALS)
        .flat_map(|p| (0..50).map(move |s| invoke(p, &format!("svc{s}-parser"))))
        .find(|r| authz.decide(r).allowed)
        .expect("some principal may invoke");
    let denied = invoke(allowed_principal(&allowed) + 1, "unlisted");
    assert!(!authz.decide(&denied).allowed);
    eprintln!("allowed: {}", authz.decide(&allowed).reason);

    let mut group = c.benchmark_group("decide");
    group.bench_function("invoke_allowed_3_caps", |b| {
        b.iter(|| authz.decide(black_box(&allowed)))
    });
    group.bench_function("invoke_default_deny", |b| {
        b.iter(|| authz.decide(black_box(&denied)))
    });
    let mut read = invoke(7, "svc4-db");
    read.action = Action::SecretRead;
    read.resource.kind = Action::SecretRead.resource_kind();
    read.capabilities.clear();
    group.bench_function("secret_read", |b| b.iter(|| authz.decide(black_box(&read))));
    // Every principal in turn, each asking for a processor of its own:
    // no two consecutive requests alike.
    let all: Vec<Request> = (0..PRINCIPALS)
        .map(|p| invoke(p, &format!("svc{}-parser", p % 50)))
        .collect();
    let allowed_share = all.iter().filter(|r| authz.decide(r).allowed).count();
    eprintln!("rotating: {allowed_share} of {PRINCIPALS} requests allowed");
    let mut next = 0;
    group.bench_function("invoke_rotating_10k_principals", |b| {
        b.iter(|| {
            next = (next + 1) % all.len();
            authz.decide(black_box(&all[next]))
        })
    });
    group.finish();
}

fn allowed_principal(r: &Request) -> usize {
    r.principal[1..].parse().unwrap_or(0)
}

criterion_group!(benches, bench);
criterion_main!(benches);
