//! Config builders: a service block, a whole config with one listener,
//! and one with the admin API and its tokens.

use std::net::SocketAddr;

/// A service YAML block with the given pools (`name → endpoints`) and split.
pub fn service(name: &str, extra: &str, pools: &[(&str, &[SocketAddr])], split: &str) -> String {
    let mut s = format!("  - name: {name}\n{extra}    pools:\n");
    for (pool, eps) in pools {
        let eps: Vec<String> = eps.iter().map(|a| format!("\"{a}\"")).collect();
        s.push_str(&format!("      {pool}: {{ endpoints: [{}] }}\n", eps.join(", ")));
    }
    if !split.is_empty() {
        s.push_str(&format!("    split:\n{split}"));
    }
    s
}

/// A config with an admin API on 127.0.0.1:0 (token `TOKEN`, named `ci`) and fast stats ticks.
pub fn admin_config(services: &str) -> String {
    format!(
        "{}admin: {{ bind: \"127.0.0.1:0\", token_file: admin.token }}\nstats: {{ window: 5s, resolution: 100ms }}\n",
        config(services)
    )
}

pub const TOKEN: &str = "s3cret-token-for-tests-0123456789";
pub const READ_TOKEN: &str = "read-only-token-for-tests-0123456789";

/// A whole config: one plain listener on 127.0.0.1:0 plus `services`.
pub fn config(services: &str) -> String {
    format!("listeners:\n  - {{ name: main, bind: \"127.0.0.1:0\" }}\nservices:\n{services}")
}
