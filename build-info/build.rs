//! Finds what the binaries were built from, for `--version` and the
//! `*_build_info` gauges: the git revision (`VIGIL_REVISION` overrides it,
//! for builds from a tarball), the build date (`SOURCE_DATE_EPOCH` sets it,
//! for reproducible builds, as Debian's tools do), and rustc's version.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=VIGIL_REVISION");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
    let revision = std::env::var("VIGIL_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".into());
    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=VIGIL_REVISION={revision}");
    println!("cargo:rustc-env=VIGIL_BUILD_DATE={}", date(seconds));
    println!("cargo:rustc-env=VIGIL_RUSTC={rustc}");
}

/// The short commit of the work tree's HEAD, and a rebuild when HEAD moves.
fn git_revision() -> Option<String> {
    let top = Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let top = String::from_utf8(top.stdout).ok()?.trim().to_string();
    let git_dir = std::path::Path::new(&top).join(".git");
    // HEAD names the branch; the branch's file (or packed-refs) moves on
    // every commit. Only files that exist are watched: cargo runs a build
    // script again on every build while a watched file is missing.
    let watch = |path: std::path::PathBuf| {
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    };
    watch(git_dir.join("HEAD"));
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD"))
        && let Some(reference) = head.trim().strip_prefix("ref: ")
    {
        watch(git_dir.join(reference));
        watch(git_dir.join("packed-refs"));
    }
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let revision = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!revision.is_empty()).then_some(revision)
}

/// `YYYY-MM-DD` (UTC) of Unix `seconds` (Howard Hinnant's civil-from-days).
fn date(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
