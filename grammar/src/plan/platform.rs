//! OCI platforms (`linux/amd64`, `linux/arm/v7`): the native one, and `--platform` values.

use serde::Serialize;
use std::fmt;

/// An OCI platform, with Go/OCI names (`amd64`, not `x86_64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// The OS names `--platform` accepts on their own (`--platform=linux`).
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
];

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// The platform kiln runs on, from the compiled target.
    pub fn native() -> Platform {
        let (architecture, variant) = native_arch();
        Platform::new(go_os(std::env::consts::OS), architecture, variant)
    }

    /// Read a `--platform` value: `os[/arch[/variant]]` or a bare architecture, normalised the
    /// way containerd normalises it (`x86_64` → `amd64`, `aarch64` → `arm64`, `armhf` → `arm/v7`).
    pub fn parse(spec: &str) -> Result<Platform, String> {
        let lower = spec.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        for part in &parts {
            if part.is_empty()
                || !part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                return Err(format!(
                    "{part:?} is an invalid component of {spec:?}: platform specifier component must match \"^[A-Za-z0-9_.-]+$\""
                ));
            }
        }
        match parts.as_slice() {
            [one] if KNOWN_OS.contains(&go_os(one)) => {
                let (architecture, variant) = native_arch();
                Ok(Platform::new(go_os(one), architecture, variant))
            }
            [arch] => {
                let (architecture, variant) = normalize_arch(arch, None);
                Ok(Platform::new("linux", &architecture, variant.as_deref()))
            }
            [os, arch] => {
                let (architecture, variant) = normalize_arch(arch, None);
                Ok(Platform::new(go_os(os), &architecture, variant.as_deref()))
            }
            [os, arch, variant] => {
                let (architecture, variant) = normalize_arch(arch, Some(variant));
                Ok(Platform::new(go_os(os), &architecture, variant.as_deref()))
            }
            _ => Err(format!(
                "{spec:?}: unknown platform format, expected os/arch[/variant]"
            )),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

fn go_os(os: &str) -> &str {
    match os {
        "macos" => "darwin",
        other => other,
    }
}

/// The Go name and variant of the compiled target's architecture.
fn native_arch() -> (&'static str, Option<&'static str>) {
    let little = cfg!(target_endian = "little");
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "x86" => ("386", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" if cfg!(target_feature = "v7") => ("arm", Some("v7")),
        "arm" => ("arm", Some("v6")),
        "powerpc64" if little => ("ppc64le", None),
        "powerpc64" => ("ppc64", None),
        "powerpc" => ("ppc", None),
        "mips64" if little => ("mips64le", None),
        "mips" if little => ("mipsle", None),
        "loongarch64" => ("loong64", None),
        other => (other, None),
    }
}

/// containerd's architecture aliases, with `8` → `v8` style variants.
fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let variant = variant.map(|v| {
        if v.chars().all(|c| c.is_ascii_digit()) {
            format!("v{v}")
        } else {
            v.to_string()
        }
    });
    match arch {
        "i386" | "i686" => ("386".into(), variant),
        "x86_64" | "x86-64" => ("amd64".into(), variant),
        "aarch64" => ("arm64".into(), variant),
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => ("arm".into(), variant.or(Some("v7".into()))),
        other => (other.to_string(), variant),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_uses_go_names() {
        let native = Platform::native();
        assert_eq!(native.os, "linux");
        let expected = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        assert!(native.architecture.starts_with(expected) || expected == "x86");
    }

    #[test]
    fn parses_and_normalises() {
        let cases: &[(&str, &str)] = &[
            ("linux/amd64", "linux/amd64"),
            ("LINUX/AMD64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64/v8"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/i386", "linux/386"),
            ("arm64", "linux/arm64"),
            ("windows/amd64", "windows/amd64"),
        ];
        for (spec, shown) in cases {
            assert_eq!(Platform::parse(spec).unwrap().to_string(), *shown, "{spec}");
        }
        assert_eq!(Platform::parse("linux").unwrap().os, "linux");
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/am d64",
            "a/b/c/d",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
