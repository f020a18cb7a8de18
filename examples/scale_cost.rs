//! Where a reload's time goes at scale: `cargo run --release --example
//! scale_cost -- CONFIG` times reading, TOML parsing, validation and the
//! table build of a config file (the one benches/scale_idle.sh writes).
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use switchyard::config::{read_config_file, Config};
use switchyard::metrics::Metrics;
use switchyard::middleware::Middlewares;
use switchyard::routing::RoutingTable;
use switchyard::upstream::BackendRegistry;

fn main() {
    let path = std::env::args().nth(1).expect("usage: scale_cost CONFIG");
    let path = Path::new(&path);
    for round in 0..3 {
        let t = Instant::now();
        let text = read_config_file(path).unwrap();
        let read = t.elapsed();
        let t = Instant::now();
        let doc = toml::de::DeTable::parse(&text).unwrap();
        let parse = t.elapsed();
        drop(doc);
        let t = Instant::now();
        let config = Config::from_toml_str_in(&text, Path::new("/")).unwrap();
        let load = t.elapsed();
        let metrics = Metrics::new();
        let registry = BackendRegistry::default();
        let t = Instant::now();
        let (mw, _) = Middlewares::build(&config, None, &metrics);
        let table =
            RoutingTable::build_and_sync(&config, &registry, &HashMap::new(), &metrics, &mw);
        let build = t.elapsed();
        let mut again = Config::from_toml_str_in(&text, Path::new("/")).unwrap();
        let t = Instant::now();
        again.share_unchanged(&config);
        let share = t.elapsed();
        let t = Instant::now();
        let table2 = RoutingTable::build_from(
            Some(&table),
            &again,
            &registry,
            &HashMap::new(),
            &metrics,
            &mw,
        );
        let rebuild = t.elapsed();
        let t = Instant::now();
        drop(table);
        drop(table2);
        drop(config);
        drop(again);
        let dropped = t.elapsed();
        println!(
            "round {round}: read {read:?}, DeTable::parse {parse:?}, parse+validate {load:?}, table build {build:?}, share_unchanged {share:?}, rebuild from it {rebuild:?}, drops {dropped:?}"
        );
    }
}
