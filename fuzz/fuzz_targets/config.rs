//! Configuration parsing and validation of arbitrary text, and of arbitrary values (any Unicode)
//! in every string key of a valid configuration: a value that is sliced (hex digests, names,
//! origins) must be checked first, never panic at a char boundary.
#![no_main]
use libfuzzer_sys::fuzz_target;

const KEYS: [&str; 8] = [
    "client_secret_sha256",
    "id",
    "name",
    "origins",
    "server_names",
    "listen",
    "listen_interfaces",
    "wan_interface",
];

fn template(key: &str, value: &str) -> String {
    let v = toml::Value::String(value.to_owned()).to_string();
    let arr = format!("[{v}]");
    let val = |k: &str, default: &str| -> String {
        if k == key {
            if matches!(k, "origins" | "server_names" | "listen" | "listen_interfaces") {
                arr.clone()
            } else {
                v.clone()
            }
        } else {
            default.to_owned()
        }
    };
    format!(
        "[server]\nlisten = {}\nlisten_interfaces = {}\nserver_names = {}\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
         [auth]\naudience = \"https://box\"\nissuers = [\"https://iss\"]\n\
         [[tool]]\nid = {}\nname = {}\norigins = {}\nscopes = [\"access\"]\nclient_secret_sha256 = {}\n\
         [metrics]\nwan_interface = {}\n",
        val("listen", "[\"127.0.0.1:8443\"]"),
        val("listen_interfaces", "[]"),
        val("server_names", "[\"box.example\"]"),
        val("id", "\"t\""),
        val("name", "\"T\""),
        val("origins", "[\"https://t.example\"]"),
        val("client_secret_sha256", &format!("\"{}\"", "0".repeat(64))),
        val("wan_interface", "\"eth0\""),
    )
}

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("/fuzz/boxapi.toml");
    if let Ok(text) = std::str::from_utf8(data) {
        let mut problems = Vec::new();
        let _ = boxapi::config::parse(text, path, &mut problems);
        // The first byte picks the key, the rest is its value.
        if let Some((&k, rest)) = text.as_bytes().split_first() {
            if let Ok(value) = std::str::from_utf8(rest) {
                let key = KEYS[usize::from(k) % KEYS.len()];
                let mut problems = Vec::new();
                let _ = boxapi::config::parse(&template(key, value), path, &mut problems);
            }
        }
    }
});
