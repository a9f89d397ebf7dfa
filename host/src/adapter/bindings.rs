//! The generated bindings of each contract version this host loads, and their mapping onto the
//! plain-Rust types of `contract.rs`.
//!
//! wasmtime generates one set of types per WIT package, so `wit/0.1` and `wit` each have a
//! module here. The records both versions share word for word (`invocation`, `info`) and the two
//! calls are written once ([`calls!`]) and expanded in each module; only `plan` differs, and each
//! version maps it onto [`Plan`] on its own: a 0.1 plan is a 0.2 plan with no stderr tag and no
//! alternatives. Nothing here instantiates or bounds a guest (`sandbox.rs` does).

use wasmtime::Store;

use super::contract::{AdapterInfo, Alternative, Invocation, Plan, StdinMode};
use super::sandbox::GuestState;

/// `describe` and `plan-run` of one version's bindings, in a store of the caller's.
macro_rules! calls {
    () => {
        use wasmtime::Store;

        use super::super::contract::{AdapterInfo, Invocation};
        use super::super::sandbox::GuestState;
        pub(crate) use exports::hoop::ecs_exec::adapter as wit;

        /// Instantiates the component in `store` and calls `describe()`; `contract` is the
        /// version its export names.
        pub(crate) fn describe(
            pre: &PipeAdapterPre<GuestState>,
            store: &mut Store<GuestState>,
            contract: String,
        ) -> wasmtime::Result<AdapterInfo> {
            let info = pre
                .instantiate(&mut *store)?
                .hoop_ecs_exec_adapter()
                .call_describe(store)?;
            Ok(AdapterInfo {
                name: info.name,
                version: info.version,
                programs: info.programs,
                summary: info.summary,
                contract,
            })
        }

        /// Instantiates the component in `store` and calls `plan-run()`.
        pub(crate) fn plan_run(
            pre: &PipeAdapterPre<GuestState>,
            store: &mut Store<GuestState>,
            invocation: &Invocation,
            nonce: &str,
        ) -> wasmtime::Result<Result<wit::Plan, String>> {
            let request = wit::Invocation {
                pipe: invocation.pipe.clone(),
                args: invocation.args.clone(),
                interactive: invocation.interactive,
                input_len: invocation.input_len,
                input: invocation.input.clone(),
            };
            pre.instantiate(&mut *store)?
                .hoop_ecs_exec_adapter()
                .call_plan_run(store, &request, nonce)
        }
    };
}

/// `hoop:ecs-exec@0.1.x`.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({ path: "../wit/0.1", world: "pipe-adapter" });
    calls!();
}

/// `hoop:ecs-exec@0.2.x`.
pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({ path: "../wit", world: "pipe-adapter" });
    calls!();
}

/// A component pre-instantiated with the bindings of the contract it was built against.
#[derive(Clone)]
pub(crate) enum Bound {
    V0_1(v0_1::PipeAdapterPre<GuestState>),
    V0_2(v0_2::PipeAdapterPre<GuestState>),
}

impl Bound {
    /// `describe()`, in `store`.
    pub(crate) fn describe(
        &self,
        store: &mut Store<GuestState>,
        contract: String,
    ) -> wasmtime::Result<AdapterInfo> {
        match self {
            Bound::V0_1(pre) => v0_1::describe(pre, store, contract),
            Bound::V0_2(pre) => v0_2::describe(pre, store, contract),
        }
    }

    /// `plan-run()`, in `store`, its plan mapped onto [`Plan`] (not validated).
    pub(crate) fn plan_run(
        &self,
        store: &mut Store<GuestState>,
        invocation: &Invocation,
        nonce: &str,
    ) -> wasmtime::Result<Result<Plan, String>> {
        Ok(match self {
            Bound::V0_1(pre) => v0_1::plan_run(pre, store, invocation, nonce)?.map(plan_from_0_1),
            Bound::V0_2(pre) => v0_2::plan_run(pre, store, invocation, nonce)?.map(plan_from_0_2),
        })
    }
}

/// A 0.1 plan is a 0.2 plan with no stderr tag and no alternatives.
fn plan_from_0_1(plan: v0_1::wit::Plan) -> Plan {
    use v0_1::wit::StdinMode as Mode;
    Plan {
        command: plan.command,
        stdin: match plan.stdin {
            Mode::None => StdinMode::None,
            Mode::Raw => StdinMode::Raw,
            Mode::Inline => StdinMode::Inline,
            Mode::StreamBase64 => StdinMode::StreamBase64,
        },
        ready_marker: plan.ready_marker,
        exit_trailer: plan.exit_trailer,
        stderr_tag: None,
        alternatives: Vec::new(),
    }
}

/// A 0.2 plan, field by field.
fn plan_from_0_2(plan: v0_2::wit::Plan) -> Plan {
    Plan {
        command: plan.command,
        stdin: mode_from_0_2(plan.stdin),
        ready_marker: plan.ready_marker,
        exit_trailer: plan.exit_trailer,
        stderr_tag: plan.stderr_tag,
        alternatives: plan
            .alternatives
            .into_iter()
            .map(|alternative| Alternative {
                ready_marker: alternative.ready_marker,
                stdin: mode_from_0_2(alternative.stdin),
                stderr_framed: alternative.stderr_framed,
                notice: alternative.notice,
            })
            .collect(),
    }
}

fn mode_from_0_2(mode: v0_2::wit::StdinMode) -> StdinMode {
    use v0_2::wit::StdinMode as Mode;
    match mode {
        Mode::None => StdinMode::None,
        Mode::Raw => StdinMode::Raw,
        Mode::Inline => StdinMode::Inline,
        Mode::StreamBase64 => StdinMode::StreamBase64,
        Mode::StreamBytes => StdinMode::StreamBytes,
        Mode::StreamChunks => StdinMode::StreamChunks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_0_1_plan_maps_onto_0_2_with_no_tag_and_no_alternatives() {
        use v0_1::wit::StdinMode as Mode;
        let modes = [
            (Mode::None, StdinMode::None),
            (Mode::Raw, StdinMode::Raw),
            (Mode::Inline, StdinMode::Inline),
            (Mode::StreamBase64, StdinMode::StreamBase64),
        ];
        for (old, new) in modes {
            let plan = plan_from_0_1(v0_1::wit::Plan {
                command: "sh -c true".to_owned(),
                stdin: old,
                ready_marker: Some("ready".to_owned()),
                exit_trailer: Some("exit".to_owned()),
            });
            assert_eq!(
                plan,
                Plan {
                    command: "sh -c true".to_owned(),
                    stdin: new,
                    ready_marker: Some("ready".to_owned()),
                    exit_trailer: Some("exit".to_owned()),
                    stderr_tag: None,
                    alternatives: Vec::new(),
                }
            );
        }
    }

    #[test]
    fn a_0_2_plan_maps_field_by_field() {
        use v0_2::wit::StdinMode as Mode;
        let plan = plan_from_0_2(v0_2::wit::Plan {
            command: "sh -c true".to_owned(),
            stdin: Mode::StreamBytes,
            ready_marker: Some("ready".to_owned()),
            exit_trailer: None,
            stderr_tag: Some("tag".to_owned()),
            alternatives: vec![
                v0_2::wit::Alternative {
                    ready_marker: "chunks".to_owned(),
                    stdin: Mode::StreamChunks,
                    stderr_framed: true,
                    notice: "one".to_owned(),
                },
                v0_2::wit::Alternative {
                    ready_marker: "base64".to_owned(),
                    stdin: Mode::StreamBase64,
                    stderr_framed: false,
                    notice: "two".to_owned(),
                },
            ],
        });
        assert_eq!(
            plan,
            Plan {
                command: "sh -c true".to_owned(),
                stdin: StdinMode::StreamBytes,
                ready_marker: Some("ready".to_owned()),
                exit_trailer: None,
                stderr_tag: Some("tag".to_owned()),
                alternatives: vec![
                    Alternative {
                        ready_marker: "chunks".to_owned(),
                        stdin: StdinMode::StreamChunks,
                        stderr_framed: true,
                        notice: "one".to_owned(),
                    },
                    Alternative {
                        ready_marker: "base64".to_owned(),
                        stdin: StdinMode::StreamBase64,
                        stderr_framed: false,
                        notice: "two".to_owned(),
                    },
                ],
            }
        );
        for (mode, expected) in [
            (Mode::None, StdinMode::None),
            (Mode::Raw, StdinMode::Raw),
            (Mode::Inline, StdinMode::Inline),
        ] {
            assert_eq!(mode_from_0_2(mode), expected);
        }
    }
}
