//! The OS/architecture/variant triple images are built for, and picking this node's entry out of
//! a multi-arch image index.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary was built for: the one its containers can run.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            // Our 32-bit build targets armv7 (Pi 2 and later boards in 32-bit mode).
            "arm" => ("arm", Some("v7")),
            other => (other, None),
        };
        Self {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Reads `linux/arm64`, `linux/arm/v7`, `amd64`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let (os, architecture, variant) = match parts[..] {
            [arch] => ("linux", arch, None),
            [os, arch] => (os, arch, None),
            [os, arch, variant] => (os, arch, Some(variant)),
            _ => {
                return Err(format!(
                    "`{text}` is not a platform; write it like linux/arm64"
                ));
            }
        };
        if os.is_empty() || architecture.is_empty() {
            return Err(format!(
                "`{text}` is not a platform; write it like linux/arm/v7"
            ));
        }
        Ok(Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        })
    }

    /// How well an entry built for `os/architecture/variant` fits this platform: `None` when it
    /// cannot run here, higher is better.
    pub fn fit(&self, os: &str, architecture: &str, variant: Option<&str>) -> Option<u8> {
        if os != self.os || architecture != self.architecture {
            return None;
        }
        let want = self.variant.as_deref();
        match (self.architecture.as_str(), want, variant) {
            (_, w, v) if w == v => Some(3),
            // arm64 images rarely say "v8"; both spellings are the same thing.
            ("arm64", None | Some("v8"), None | Some("v8")) => Some(3),
            // An ARMv7 core runs ARMv6 and ARMv5 code (slower, but it runs).
            ("arm", Some("v7"), Some("v6")) => Some(2),
            ("arm", Some("v7"), Some("v5")) => Some(1),
            ("arm", Some(_), None) => Some(1),
            _ => None,
        }
    }

    /// Picks the best entry of an image index for this platform. Entries are
    /// `(os, architecture, variant, digest)`; the first of equally good ones wins.
    pub fn choose<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>, &'a str)>,
    ) -> Option<&'a str> {
        let mut best: Option<(u8, &str)> = None;
        for (os, arch, variant, digest) in entries {
            if let Some(score) = self.fit(os, arch, variant)
                && best.is_none_or(|(b, _)| score > b)
            {
                best = Some((score, digest));
            }
        }
        best.map(|(_, d)| d)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Platform;

    fn p(text: &str) -> Platform {
        Platform::parse(text).expect("platform")
    }

    #[test]
    fn each_board_gets_its_own_entry_from_a_three_platform_index() {
        let index = [
            ("linux", "amd64", None, "A"),
            ("linux", "arm64", Some("v8"), "B"),
            ("linux", "arm", Some("v7"), "C"),
        ];
        assert_eq!(p("linux/amd64").choose(index), Some("A"));
        assert_eq!(p("linux/arm64").choose(index), Some("B"));
        assert_eq!(p("linux/arm/v7").choose(index), Some("C"));
        assert_eq!(p("linux/riscv64").choose(index), None);
    }

    #[test]
    fn armv7_prefers_v7_but_runs_v6_and_arm64_ignores_the_v8_spelling() {
        let index = [
            ("linux", "arm", Some("v6"), "six"),
            ("linux", "arm", Some("v7"), "seven"),
        ];
        assert_eq!(p("linux/arm/v7").choose(index), Some("seven"));
        assert_eq!(
            p("linux/arm/v7").choose([("linux", "arm", Some("v6"), "six")]),
            Some("six")
        );
        assert_eq!(
            p("linux/arm/v6").choose([("linux", "arm", Some("v7"), "x")]),
            None
        );
        assert_eq!(
            p("linux/arm64/v8").choose([("linux", "arm64", None, "B")]),
            Some("B")
        );
        assert_eq!(
            p("linux/amd64").choose([("windows", "amd64", None, "W")]),
            None
        );
    }

    #[test]
    fn platforms_read_and_print_the_way_docker_writes_them() {
        assert_eq!(p("linux/arm/v7").to_string(), "linux/arm/v7");
        assert_eq!(p("arm64").to_string(), "linux/arm64");
        assert!(Platform::parse("a/b/c/d").is_err());
        assert!(Platform::parse("/amd64").is_err());
    }
}
