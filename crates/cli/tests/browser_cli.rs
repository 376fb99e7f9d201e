//! A web page sends events with Segment's analytics.js (`@segment/analytics-next`
//! from npm, fetched by `.ci/test`) to `tenure serve`, in headless Chromium:
//! the library loads its settings from Tenure (no other host is reachable),
//! the browser's CORS preflights are answered for the page's origin, and the
//! identify, track and page calls come back from the store.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

mod common;
use common::{chromium, headless};

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

/// The first stdout line of `child` that starts with `prefix`, without it.
fn line_after(child: &mut Child, prefix: &str) -> String {
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let found = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix(prefix).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}"));
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    found
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn analytics_js_in_a_browser_sends_to_tenure() {
    let (Ok(python), Ok(lib)) = (
        std::env::var("TENURE_TEST_PYTHON"),
        std::env::var("TENURE_TEST_ANALYTICS_JS"),
    ) else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must provide analytics.js (TENURE_TEST_ANALYTICS_JS) and python"
        );
        eprintln!("skipped: set TENURE_TEST_ANALYTICS_JS to analytics-next's dist/umd folder");
        return;
    };
    let Some(chromium) = chromium() else {
        if std::env::var_os("TENURE_TEST_CHROMIUM_REQUIRED").is_some() {
            panic!("chromium is required (TENURE_TEST_CHROMIUM_REQUIRED is set) but not found");
        }
        eprintln!("skipped: chromium not found");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::copy(Path::new(&lib).join("index.js"), site.join("index.js")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/browser/index.html"),
        site.join("index.html"),
    )
    .unwrap();
    // The page's own origin, another port than Tenure's: CORS applies.
    let mut web = Killed(
        Command::new(&python)
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
            .current_dir(&site)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let port = line_after(&mut web.0, "Serving HTTP on 127.0.0.1 port ");
    let port = port.split_whitespace().next().unwrap().to_string();
    let origin = format!("http://127.0.0.1:{port}");

    let store = dir.path().join("store");
    let mut serve = Killed(
        tenure()
            .arg("serve")
            .arg("--to")
            .arg(&store)
            .arg("--wal")
            .arg(dir.path().join("wal"))
            .args(["--write-key", "web-key", "--listen", "127.0.0.1:0"])
            .args(["--cors-origin", &origin, "--flush-age-ms", "100"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let tenure_url = format!(
        "http://{}",
        line_after(&mut serve.0, "listening on http://")
    );

    let page = format!("{origin}/index.html?key=web-key&tenure={tenure_url}");
    let profile = dir.path().join("profile");
    let dom = headless(&chromium, &profile)
        .args([
            // Every other host fails: nothing may come from Segment's CDN.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(&page)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<title>sent</title>"), "{dom}");

    // SIGTERM: the server commits what it acknowledged, then exits.
    let pid = serve.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(serve.0.wait().unwrap().success());
    let out = tenure()
        .args(["sql", "--format", "csv", "--data"])
        .arg(&store)
        .arg("SELECT user_id, event, strpos(properties, '\"sku-1\"') > 0 AS item FROM events ORDER BY event")
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        csv,
        "user_id,event,item\nweb-user-1,identify,false\nweb-user-1,page,false\nweb-user-1,view_item,true\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
