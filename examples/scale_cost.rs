//! Where a reload's time goes at scale: `cargo run --release --example
//! scale_cost -- CONFIG` times reading, TOML parsing, validation and the
//! table build of a config file (the one benches/scale_idle.sh writes), and
//! what a reload that changes one pool's weight reads instead (the text's
//! index, built at each full read, and the pool read again alone).
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use switchyard::config::{read_config_file, Config, ConfigSource};
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
        let source = ConfigSource::index(text.clone(), Path::new("/"));
        let index = t.elapsed();
        // One pool's weight changed, read again alone.
        let edited = text.replacen("weight = 90", "weight = 80", 1);
        let t = Instant::now();
        let partial = source.reparse(&config, edited).map(|(c, _)| c);
        let reread = t.elapsed();
        assert!(
            partial.is_ok(),
            "the first pool's weight is not 90 in this file"
        );
        let t = Instant::now();
        drop(table);
        drop(table2);
        drop(config);
        drop(again);
        let dropped = t.elapsed();
        println!(
            "round {round}: read {read:?}, DeTable::parse {parse:?}, parse+validate {load:?}, table build {build:?}, share_unchanged {share:?}, rebuild from it {rebuild:?}, index the text {index:?}, one pool re-read {reread:?}, drops {dropped:?}"
        );
    }
}
