//! What adapters cost a run: built-in adapters (precompiled into the binary, no cache), and a
//! third-party adapter compiled cold or deserialized from a warm cache.
//!
//! `builtin_run` is the figure the 2 ms budget is about: everything a run served by a built-in
//! adapter does in this layer (create the sandbox, deserialize each built-in's embedded compiled
//! form and read its info, select, instantiate the chosen one in a fresh store, make and validate
//! a plan), with no cache directory at all. Run with `cargo bench -p ecs-exec --bench adapter`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ecs_exec::adapter::{AdapterSet, CacheMode, Invocation, LoadOptions, new_nonce};

fn options(cache: CacheMode, adapter_files: Vec<PathBuf>) -> LoadOptions {
    LoadOptions {
        cache,
        adapter_files,
        ..LoadOptions::default()
    }
}

fn one_run(options: &LoadOptions, pipe: &str) {
    let mut adapters = AdapterSet::load(options).expect("load adapters");
    let adapter = adapters.select(Some(pipe), None).expect("select");
    let invocation = Invocation::one_off_with_input(Some(pipe.to_owned()), vec![], b"input\n");
    black_box(adapter.plan(&invocation, &new_nonce()).expect("plan"));
}

fn benches(c: &mut Criterion) {
    let builtin_only = options(CacheMode::Off, Vec::new());
    c.bench_function("builtin_run", |b| {
        b.iter(|| one_run(&builtin_only, "rails runner -"))
    });
    c.bench_function("load_builtin_set", |b| {
        b.iter(|| black_box(AdapterSet::load(&builtin_only).expect("load")))
    });

    let template =
        PathBuf::from(env!("ECS_EXEC_TEST_GUESTS_DIR")).join("ecs_exec_adapter_template.wasm");
    let cache_dir = tempfile::tempdir().expect("temporary cache directory");
    let warm = options(
        CacheMode::Dir(cache_dir.path().to_owned()),
        vec![template.clone()],
    );
    one_run(&warm, "template-example"); // fill the cache
    let mut cold = c.benchmark_group("cold");
    cold.sample_size(10)
        .measurement_time(Duration::from_secs(10));
    cold.bench_function("third_party_compile_and_run", |b| {
        b.iter(|| {
            one_run(
                &options(CacheMode::Off, vec![template.clone()]),
                "template-example",
            )
        })
    });
    cold.finish();
    c.bench_function("third_party_warm_run", |b| {
        b.iter(|| one_run(&warm, "template-example"))
    });

    let mut adapters = AdapterSet::load(&builtin_only).expect("load adapters");
    let adapter = adapters.select(Some("python3"), None).expect("select");
    let invocation = Invocation::one_off_streamed(Some("python3".to_owned()), vec![], None);
    adapter
        .plan(&invocation, &new_nonce())
        .expect("first plan prepares the adapter");
    c.bench_function("plan_on_loaded_adapter", |b| {
        b.iter(|| black_box(adapter.plan(&invocation, &new_nonce()).expect("plan")))
    });
}

criterion_group!(adapter, benches);
criterion_main!(adapter);
