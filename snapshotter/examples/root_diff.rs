//! Times the snapshots of a live root (builds without isolation) on a large tree:
//!
//! ```text
//! cargo run --release -p kiln-snapshotter --example root_diff -- DIR [FILES]
//! ```
//!
//! Makes a chain of FILES small files (100 per directory) in a copy-backed store under DIR
//! (or uses the one an earlier run left there), syncs a root to it, then measures what a RUN step that touches nothing costs: the
//! sync of a root that already matches, and the diff after the step. Prints one JSON object.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use kiln_snapshotter::{ChainId, DiffOptions, Snapshotter, SnapshotterOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: root_diff DIR [FILES]")?);
    let files: usize = match args.next() {
        Some(n) => n.to_string_lossy().parse()?,
        None => 100_000,
    };
    fs::create_dir_all(&dir)?;
    let snap = Snapshotter::with_options(
        &dir.join("store"),
        SnapshotterOptions {
            force_copy: true,
            ..SnapshotterOptions::default()
        },
    )?;

    // A chain made by an earlier run in DIR is used again (making 100,000 files takes minutes).
    let started = Instant::now();
    let saved = dir.join("chain");
    let chain = match fs::read_to_string(&saved)
        .ok()
        .and_then(|text| ChainId::parse(text.trim()).ok())
        .filter(|chain| snap.exists(chain))
    {
        Some(chain) => chain,
        None => {
            let base = snap.prepare(None)?;
            for i in 0..files {
                let d = base.mount_point().join(format!("d{:04}", i / 100));
                if i % 100 == 0 {
                    fs::create_dir(&d)?;
                }
                fs::write(d.join(format!("f{i}")), i.to_string())?;
            }
            let chain = base
                .commit(std::io::sink(), &DiffOptions::default())?
                .chain_id;
            fs::write(&saved, chain.to_string())?;
            chain
        }
    };
    let made = started.elapsed();

    let root = dir.join("root");
    fs::create_dir_all(&root)?;
    let started = Instant::now();
    let first = snap.prepare_root(Some(&chain), &root, &[])?;
    let first_sync = started.elapsed();
    first.abort()?;

    // A RUN that touches nothing: the root already matches, and nothing changes in it.
    let started = Instant::now();
    let step = snap.prepare_root(Some(&chain), &root, &[])?;
    let noop_prepare = started.elapsed();
    let started = Instant::now();
    let mut layer = Vec::new();
    let stats = step.diff(&mut layer, &DiffOptions::default())?;
    let noop_diff = started.elapsed();

    // One file changed, for comparison.
    fs::write(root.join("d0000/f0"), "changed")?;
    let started = Instant::now();
    let mut one = Vec::new();
    let one_stats = step.diff(&mut one, &DiffOptions::default())?;
    let one_diff = started.elapsed();
    step.abort()?;

    println!(
        "{{\"files\": {files}, \"threads\": {}, \"make_chain_s\": {:.3}, \"first_sync_s\": {:.3}, \
         \"noop_prepare_s\": {:.3}, \"noop_diff_s\": {:.3}, \"noop_diff_entries\": {}, \
         \"one_file_diff_s\": {:.3}, \"one_file_diff_entries\": {}}}",
        rayon::current_num_threads(),
        made.as_secs_f64(),
        first_sync.as_secs_f64(),
        noop_prepare.as_secs_f64(),
        noop_diff.as_secs_f64(),
        stats.entries,
        one_diff.as_secs_f64(),
        one_stats.entries,
    );
    Ok(())
}
