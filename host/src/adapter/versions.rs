//! Which versions of the adapter contract this host loads, told from a component's export name.
//!
//! A component names the contract it was built against in the interface it exports,
//! `hoop:ecs-exec/adapter@<version>`. Semver applies: while the major version is 0 a minor
//! version is a contract of its own (`0.1.x` and `0.2.x` differ), and any patch of a minor
//! version this host has bindings for loads with them. Pure string logic with nothing but `std`,
//! shared with `host/build.rs`, which records the built-in adapters' versions.

/// The adapter interface, without a version.
pub const INTERFACE: &str = "hoop:ecs-exec/adapter";

/// The interface at the version of `wit/adapter.wit`, which the built-in adapters export.
pub const CURRENT: &str = "hoop:ecs-exec/adapter@0.2.0";

/// The versions this host loads, as messages name them.
pub const SPOKEN: &str = "hoop:ecs-exec/adapter@0.2.x and @0.1.x";

/// A contract this host has bindings for: every `MAJOR.MINOR.x` of it loads with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Contract {
    /// `0.1.x`, kept in `wit/0.1/`.
    V0_1,
    /// `0.2.x`, `wit/adapter.wit`.
    V0_2,
}

impl Contract {
    /// The contract a version (`0.1.1`, `0.2.0-rc.1`) belongs to, if this host speaks it.
    pub fn of_version(version: &str) -> Option<Contract> {
        let mut parts = version.split(['.', '-', '+']);
        let major: u64 = parts.next()?.parse().ok()?;
        let minor: u64 = parts.next()?.parse().ok()?;
        match (major, minor) {
            (0, 1) => Some(Contract::V0_1),
            (0, 2) => Some(Contract::V0_2),
            _ => None,
        }
    }
}

/// What one export name says about the adapter contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export<'a> {
    /// Our interface at a version this host speaks; the version as the name writes it.
    Spoken(Contract, &'a str),
    /// Our interface at a version this host does not speak (or with no version at all).
    Unspoken,
    /// Not our interface.
    Foreign,
}

/// Reads one export name of a component.
pub fn classify_export(export: &str) -> Export<'_> {
    let (name, version) = export.split_once('@').unwrap_or((export, ""));
    if name != INTERFACE {
        return Export::Foreign;
    }
    match Contract::of_version(version) {
        Some(contract) => Export::Spoken(contract, version),
        None => Export::Unspoken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_versions_match_by_semver() {
        let spoken = |contract, version| Export::Spoken(contract, version);
        for (export, expected) in [
            (
                "hoop:ecs-exec/adapter@0.1.0",
                spoken(Contract::V0_1, "0.1.0"),
            ),
            (
                "hoop:ecs-exec/adapter@0.1.7",
                spoken(Contract::V0_1, "0.1.7"),
            ),
            (
                "hoop:ecs-exec/adapter@0.2.0",
                spoken(Contract::V0_2, "0.2.0"),
            ),
            (
                "hoop:ecs-exec/adapter@0.2.3",
                spoken(Contract::V0_2, "0.2.3"),
            ),
            (
                "hoop:ecs-exec/adapter@0.2.1-rc.1",
                spoken(Contract::V0_2, "0.2.1-rc.1"),
            ),
            ("hoop:ecs-exec/adapter@0.3.0", Export::Unspoken),
            ("hoop:ecs-exec/adapter@0.0.9", Export::Unspoken),
            ("hoop:ecs-exec/adapter@1.0.0", Export::Unspoken),
            ("hoop:ecs-exec/adapter@1.2.0", Export::Unspoken),
            ("hoop:ecs-exec/adapter@junk", Export::Unspoken),
            ("hoop:ecs-exec/adapter", Export::Unspoken),
            ("wasi:cli/run@0.2.0", Export::Foreign),
            ("hoop:ecs-exec/other@0.2.0", Export::Foreign),
        ] {
            assert_eq!(classify_export(export), expected, "{export}");
        }
        assert_eq!(
            classify_export(CURRENT),
            spoken(Contract::V0_2, "0.2.0"),
            "the built-ins' own version is spoken"
        );
    }
}
