//! The built-in adapters and their compiled form, both embedded in the binary.
//!
//! `host/build.rs` compiles each shipped guest ahead of time with the engine settings of
//! `engine_config.rs` (for the target's baseline CPU, so the artifact fits any machine of its
//! architecture) and embeds the artifact beside the `.wasm`. Loading a built-in deserializes
//! that artifact: no compiler runs and no file is read or written, so a first run with no cache
//! or a read-only home is as quick as any other. Should wasmtime refuse the artifact anyway (a
//! target the build could not compile for, or a CPU missing a feature the artifact assumes),
//! the embedded `.wasm` is compiled in memory instead. The on-disk cache is for third-party
//! adapters only.
//!
//! The build also called each one's `describe()` and recorded the answer here ([`RecordedInfo`]),
//! with the contract version the component exports, so choosing an adapter loads none: a run deserialises only the built-in it uses, when it
//! first asks it for a plan.

use wasmtime::component::Component;

use super::contract::AdapterInfo;
use super::error::AdapterErrorKind;
use super::sandbox::Sandbox;

/// One adapter built into the binary.
#[derive(Debug)]
pub(crate) struct Builtin {
    /// Its name (the same as its `describe()` says).
    pub(crate) name: &'static str,
    /// The component.
    pub(crate) wasm: &'static [u8],
    /// The component compiled by `host/build.rs`, when the build could compile for its target.
    pub(crate) precompiled: Option<&'static [u8]>,
    /// What its `describe()` returned when `host/build.rs` called it (the name is `name`).
    pub(crate) info: RecordedInfo,
}

/// A built-in adapter's `describe()` answer, recorded at build time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordedInfo {
    pub(crate) version: &'static str,
    pub(crate) programs: &'static [&'static str],
    pub(crate) summary: &'static str,
    /// The contract version its export names.
    pub(crate) contract: &'static str,
}

mod generated {
    use super::{Builtin, RecordedInfo};
    include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
}

/// Every built-in adapter, in the order they are listed.
pub(crate) const BUILTINS: &[Builtin] = generated::BUILTINS;

/// How a built-in adapter got its compiled form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loaded {
    /// From the artifact compiled at build time.
    Precompiled,
    /// Compiled now, from the embedded `.wasm`.
    Compiled,
}

impl Builtin {
    /// Its info, as its `describe()` returned it at build time (not validated yet).
    pub(crate) fn info(&self) -> AdapterInfo {
        AdapterInfo {
            name: self.name.to_owned(),
            version: self.info.version.to_owned(),
            programs: self.info.programs.iter().map(|&p| p.to_owned()).collect(),
            summary: self.info.summary.to_owned(),
            contract: self.info.contract.to_owned(),
        }
    }

    /// The compiled component: the embedded artifact when wasmtime accepts it, else compiled now.
    pub(crate) fn load(&self, sandbox: &Sandbox) -> Result<(Component, Loaded), AdapterErrorKind> {
        if let Some(artifact) = self.precompiled {
            // SAFETY: `Component::deserialize` runs the artifact's machine code, so it must be
            // wasmtime's own output and unaltered. These bytes are: `host/build.rs` produced them
            // with `Engine::precompile_component` and they are embedded in this executable
            // (read-only data), so they are exactly as trustworthy as the rest of its code.
            // wasmtime still checks the version, engine settings and CPU features they assume.
            match unsafe { Component::deserialize(sandbox.engine(), artifact) } {
                Ok(component) => {
                    tracing::debug!(adapter = self.name, "built-in adapter loaded precompiled");
                    return Ok((component, Loaded::Precompiled));
                }
                Err(error) => tracing::debug!(
                    adapter = self.name,
                    error = %error,
                    "the precompiled built-in adapter does not fit this machine; compiling it"
                ),
            }
        }
        Ok((sandbox.compile(self.wasm)?, Loaded::Compiled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::Limits;

    fn shell() -> &'static Builtin {
        BUILTINS.iter().find(|b| b.name == "shell").unwrap()
    }

    #[test]
    fn every_builtin_has_an_artifact_this_machine_accepts() {
        let sandbox = Sandbox::new(Limits::default()).unwrap();
        for builtin in BUILTINS {
            let artifact = builtin
                .precompiled
                .expect("the build compiles for its own host");
            assert_eq!(
                wasmtime::Engine::detect_precompiled(artifact),
                Some(wasmtime::Precompiled::Component),
                "{}",
                builtin.name
            );
            let (component, loaded) = builtin.load(&sandbox).unwrap();
            assert_eq!(loaded, Loaded::Precompiled, "{}", builtin.name);
            let info = sandbox.call_info(&sandbox.prepare(&component).unwrap());
            assert_eq!(info.unwrap(), builtin.info(), "recorded at build time");
        }
        assert_eq!(sandbox.compilations(), 0, "nothing was compiled");
    }

    #[test]
    fn a_refused_artifact_falls_back_to_compiling_the_wasm() {
        let sandbox = Sandbox::new(Limits::default()).unwrap();
        let original = shell().precompiled.unwrap();
        // A damaged ELF header: wasmtime refuses it before looking further.
        let mut corrupted = original.to_vec();
        corrupted[..64].fill(0);
        // An artifact from an engine with other settings (no fuel): valid, but incompatible.
        let mut other_settings = wasmtime::Config::new();
        other_settings.epoch_interruption(true);
        let foreign = wasmtime::Engine::new(&other_settings)
            .unwrap()
            .precompile_component(shell().wasm)
            .unwrap();
        for (case, artifact) in [("corrupted", corrupted), ("other settings", foreign)] {
            let artifact: &'static [u8] = Vec::leak(artifact);
            let builtin = Builtin {
                precompiled: Some(artifact),
                ..*shell()
            };
            let before = sandbox.compilations();
            let (component, loaded) = builtin.load(&sandbox).unwrap();
            assert_eq!(loaded, Loaded::Compiled, "{case}");
            assert_eq!(sandbox.compilations(), before + 1, "{case}");
            let info = sandbox.call_info(&sandbox.prepare(&component).unwrap());
            assert_eq!(info.unwrap().name, "shell", "{case}");
        }
        let without = Builtin {
            precompiled: None,
            ..*shell()
        };
        assert_eq!(without.load(&sandbox).unwrap().1, Loaded::Compiled);
    }
}
