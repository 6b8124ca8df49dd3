//! Prints the Cedar export of an RBAC file: `cargo run -p warden-authz --example export -- FILE`.
fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "crates/warden-authz/examples/rbac.yaml".into());
    let source = std::fs::read_to_string(&path).expect("read the RBAC file");
    for d in warden_authz::check(&source, &path) {
        eprintln!("{d}");
    }
    match warden_authz::Authz::load(&source, &path) {
        Ok(authz) => {
            let export = authz.export_cedar();
            println!(
                "{}\n{}\n{}",
                export.policies, export.schema, export.entities
            );
        }
        Err(diags) => diags.iter().for_each(|d| eprintln!("{d}")),
    }
}
