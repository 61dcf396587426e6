//! Cap'n Proto code generation.
//!
//! The generated Rust code is kept in the tree so that a machine with only
//! the Rust toolchain can build Orcastra: the schema compiler (`capnp`) is a
//! C++ program that a fresh machine does not have. When `capnp` is on the
//! PATH, this script regenerates the code from `schema/` and compares it with
//! the kept copies, so a schema change cannot drift from the code silently.
//! CI installs Debian's `capnproto` and runs this check.
//!
//! * mismatch, `ORCASTRA_CAPNP_UPDATE=1`: the kept copy is rewritten.
//! * mismatch otherwise: the build fails and says how to update.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Each schema, where its generated code is kept, and the module it lives in.
const SCHEMAS: [(&str, &str, &str); 3] = [
    ("record", "src/record/record_capnp.rs", "record"),
    ("journal", "src/stream/journal_capnp.rs", "stream"),
    ("task", "src/task/task_capnp.rs", "task"),
];

fn main() {
    println!("cargo:rerun-if-env-changed=ORCASTRA_CAPNP_UPDATE");
    println!("cargo:rerun-if-env-changed=PATH");
    for (schema, kept, _) in SCHEMAS {
        println!("cargo:rerun-if-changed=schema/{schema}.capnp");
        println!("cargo:rerun-if-changed={kept}");
    }
    if Command::new("capnp").arg("--version").output().is_err() {
        // No schema compiler here: build from the kept copies.
        return;
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let update = std::env::var_os("ORCASTRA_CAPNP_UPDATE").is_some_and(|v| v == "1");
    for (schema, kept, module) in SCHEMAS {
        let source = format!("schema/{schema}.capnp");
        capnpc::CompilerCommand::new()
            .src_prefix("schema")
            .default_parent_module(vec![module.into()])
            .file(&source)
            .output_path(&out_dir)
            .run()
            .unwrap_or_else(|e| panic!("capnp failed to compile {source}: {e}"));
        let fresh = std::fs::read_to_string(out_dir.join(format!("{schema}_capnp.rs")))
            .expect("capnpc wrote the generated code");
        if std::fs::read_to_string(kept).unwrap_or_default() == fresh {
            continue;
        }
        if update {
            std::fs::write(Path::new(kept), fresh).expect("write the regenerated schema code");
            println!("cargo:warning={kept} regenerated from {source}");
            continue;
        }
        panic!(
            "{kept} does not match {source} as compiled by the capnp on this PATH. \
             Regenerate it with `ORCASTRA_CAPNP_UPDATE=1 cargo build` and commit the result \
             (CI compares against Debian's capnproto package)."
        );
    }
}
