//! The FDL parser against the thesis figures and against the mistakes users make.

use std::path::{Path, PathBuf};

use spillway_proto::fdl::{
    self, LambdaTarget, NetworkMode, Platform, ReplicaTarget, Runtime, Severity,
};
use spillway_proto::quantity::{Bytes, Millicores};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/examples")
        .join(name)
}

fn parse(text: &str) -> fdl::Parsed {
    fdl::parse_str("test.yaml", text, Path::new("/nonexistent"))
}

fn messages(parsed: &fdl::Parsed, severity: Severity) -> Vec<String> {
    parsed
        .diagnostics
        .iter()
        .filter(|d| d.severity == severity)
        .map(ToString::to_string)
        .collect()
}

#[test]
fn figure_2_2_scar_av_workflow_is_accepted() {
    let parsed = fdl::parse_file(&example("thesis/fig2.2-av-workflow.yaml"));
    let (fdl, warnings) = parsed.into_result().expect("Fig. 2.2 is valid");
    assert_eq!(fdl.functions.len(), 3);
    let ffmpeg = &fdl.functions[0];
    assert_eq!(ffmpeg.platform, Platform::Aws);
    assert_eq!(ffmpeg.name, "scar-av-workflow-ffmpeg");
    assert_eq!(
        ffmpeg.image.as_deref(),
        Some("jrottenberg/ffmpeg:4.1-ubuntu")
    );
    assert_eq!(ffmpeg.runtime, Runtime::Oci);
    assert_eq!(
        ffmpeg.memory,
        Some(Bytes::from_mib(1024)),
        "SCAR memory is MiB"
    );
    assert_eq!(ffmpeg.timeout.map(|t| t.as_secs()), Some(900));
    assert_eq!(ffmpeg.output.len(), 2);
    assert_eq!(ffmpeg.output[0].suffix, vec!["avi"]);
    assert!(ffmpeg.output[0].accepts("clip.avi") && !ffmpeg.output[0].accepts("clip.wav"));
    assert_eq!(
        ffmpeg
            .script
            .as_ref()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str()),
        Some("ffmpeg-script.sh")
    );
    // `execution_mode` and the `batch` section are SCAR features we keep but do not run.
    assert!(ffmpeg.extra.contains_key("execution_mode"));
    assert!(fdl.extra.contains_key("batch"));
    assert!(
        warnings.iter().any(|w| w.path == "functions.batch"),
        "{warnings:?}"
    );
}

#[test]
fn figure_3_2_hybrid_workflow_is_accepted_with_nested_storage_providers() {
    let parsed = fdl::parse_file(&example("thesis/fig3.2-mask-detector.yaml"));
    let (fdl, _) = parsed.into_result().expect("Fig. 3.2 is valid");
    assert_eq!(fdl.functions.len(), 2);
    let oscar = fdl
        .functions
        .iter()
        .find(|f| f.name == "oscar-anon-and-split")
        .expect("oscar function");
    assert_eq!(oscar.cluster_id(), Some("my_oscar"));
    assert_eq!(
        oscar.cpu,
        Some(Millicores(1000)),
        "quoted '1.0' is one core"
    );
    assert_eq!(oscar.memory, Some(Bytes(2 << 30)));
    assert_eq!(oscar.output[0].provider.to_string(), "s3.my_s3");
    assert_eq!(
        oscar.output[0].path.to_string(),
        "scar-mask-detector/intermediate"
    );
    let s3 = &fdl.storage_providers[0];
    assert_eq!(s3.reference.to_string(), "s3.my_s3");
    assert_eq!(s3.settings["region"].expose(), "us-east-1");
}

#[test]
fn figure_5_4_replicas_are_read_in_priority_order() {
    let parsed = fdl::parse_file(&example("thesis/fig5.4-fire-detection.yaml"));
    let (fdl, _) = parsed.into_result().expect("Fig. 5.4 is valid");
    let fog = &fdl.functions[0];
    assert_eq!(fog.cluster_id(), Some("fog"));
    assert_eq!(fog.rescheduler_threshold, Some(15));
    assert_eq!(fog.cpu, Some(Millicores(1000)));
    assert_eq!(fog.memory, Some(Bytes(1 << 30)));
    assert_eq!(fog.input[0].path.bucket, "fire-detect");
    assert_eq!(
        fog.input[0].path.folder.as_ref().map(|k| k.as_str()),
        Some("input")
    );
    assert_eq!(
        fog.replicas[0].target,
        ReplicaTarget::Oscar {
            cluster_id: "on-premises".into(),
            service_name: "fire-detection-replica".into()
        }
    );
    assert_eq!(fog.environment["TOPIC_ARN"], "xxxxxxx");
    let onprem = &fdl.functions[1];
    match &onprem.replicas[0].target {
        ReplicaTarget::Endpoint { url, headers } => {
            assert_eq!(url, "https://lambda-function.example");
            assert_eq!(headers["Authorization"].expose(), "Bearer xxxxxxx");
        }
        other => panic!("expected an endpoint replica, got {other:?}"),
    }
}

#[test]
fn the_clusters_a_function_delegates_to_travel_with_it() {
    let parsed = parse(
        "functions:\n  oscar:\n  - fog:\n      name: f\n      runtime: process\n      command: [\"true\"]\n      replicas: [{type: oscar, cluster_id: cloud, service_name: g}]\n  - fog:\n      name: h\n      runtime: process\n      command: [\"true\"]\nclusters:\n  cloud: {endpoint: 'https://cloud.example', auth_user: oscar, auth_password: pw}\n  other: {endpoint: 'https://other.example'}\n",
    );
    let (fdl, _) = parsed.into_result().expect("valid");
    let f = &fdl.functions[0];
    assert_eq!(f.clusters.keys().collect::<Vec<_>>(), ["cloud"]);
    assert_eq!(
        f.clusters["cloud"]
            .auth_password
            .as_ref()
            .map(|p| p.expose()),
        Some("pw")
    );
    assert!(fdl.functions[1].clusters.is_empty());
}

#[test]
fn spillway_extensions_live_on_the_same_entry() {
    let parsed = parse(
        "functions:\n  oscar:\n  - edge:\n      name: gray\n      runtime: wasm\n      module: gray.wasm\n      timeout: 30s\n      max_concurrency: 2\n      memory: 64Mi\n      environment:\n        Variables:\n          THRESHOLD: 0.5\n          ENABLED: true\n",
    );
    let (fdl, _) = parsed.into_result().expect("valid");
    let f = &fdl.functions[0];
    assert_eq!(f.runtime, Runtime::Wasm);
    assert_eq!(f.timeout.map(|t| t.as_secs()), Some(30));
    assert_eq!(f.max_concurrency, Some(2));
    assert_eq!(
        f.module.as_deref(),
        Some(Path::new("/nonexistent/gray.wasm"))
    );
    assert_eq!(f.environment["THRESHOLD"], "0.5");
    assert_eq!(f.environment["ENABLED"], "true");
}

#[test]
fn newer_unwrapped_oscar_services_and_federation_members_are_understood() {
    let parsed = parse(
        "functions:\n  oscar:\n    - name: grayify\n      image: ghcr.io/grycap/imagemagick\n      cpu: \"0.5\"\n      memory: 0.5Gi\n      federation:\n        topology: mesh\n        delegation: random\n        members:\n          - type: oscar\n            cluster_id: a\n            service_name: grayify1\n            priority: 1\n",
    );
    let (fdl, _) = parsed.into_result().expect("valid");
    let f = &fdl.functions[0];
    assert_eq!(f.cluster_id(), None);
    assert_eq!(f.cpu, Some(Millicores(500)));
    assert_eq!(f.memory, Some(Bytes(512 << 20)));
    assert_eq!(f.replicas.len(), 1);
    assert_eq!(f.replicas[0].priority, 1);
    assert_eq!(
        f.federation.as_ref().and_then(|x| x.topology.as_deref()),
        Some("mesh")
    );
}

#[test]
fn oscar_v4_spellings_are_read_as_oscar_reads_them() {
    // OSCAR v4 writes `variables` and moved `rescheduler_threshold` under `federation`; its JSON
    // decoder ignores the case of field names.
    for spelling in ["variables", "Variables", "VARIABLES"] {
        let parsed = parse(&format!(
            "functions:\n  oscar:\n  - fog:\n      name: f\n      image: alpine\n      environment:\n        {spelling}:\n          MODEL: yolo\n      federation:\n        rescheduler_threshold: 45\n"
        ));
        assert!(
            messages(&parsed, Severity::Warning).is_empty(),
            "{spelling}: {:?}",
            messages(&parsed, Severity::Warning)
        );
        let (fdl, _) = parsed.into_result().expect("valid");
        let f = &fdl.functions[0];
        assert_eq!(f.environment["MODEL"], "yolo", "{spelling}");
        assert_eq!(f.rescheduler_threshold, Some(45));
    }
    let both = parse(
        "functions:\n  oscar:\n  - fog:\n      name: f\n      image: alpine\n      rescheduler_threshold: 10\n      federation:\n        rescheduler_threshold: 45\n",
    );
    let (fdl, _) = both.into_result().expect("valid");
    assert_eq!(
        fdl.functions[0].rescheduler_threshold,
        Some(10),
        "the service's own wins"
    );
}

#[test]
fn secrets_cluster_ids_and_kubernetes_only_fields_are_read_as_oscar_v4_writes_them() {
    let parsed = parse(
        "functions:\n  oscar:\n  - name: f\n    cluster_id: edge\n    image: alpine\n    ephemeral_storage_request: 1Gi\n    kserve: {type: inference}\n    environment:\n      Secrets:\n        API_KEY: s3cret\n    input:\n    - storage_provider: minio.default\n      path: f/in\n      options: --vfs-cache-mode full\n",
    );
    let warnings = messages(&parsed, Severity::Warning);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .all(|w| w.contains("not supported by Spillway yet")),
        "known, not typos: {warnings:?}"
    );
    let (fdl, _) = parsed.into_result().expect("valid");
    let f = &fdl.functions[0];
    assert_eq!(f.cluster_id(), Some("edge"));
    assert_eq!(f.secrets["API_KEY"].expose(), "s3cret");
    let shown = serde_json::to_string(&f.redacted()).expect("json");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(!format!("{f:?}").contains("s3cret"));
    let clash = parse(
        "functions:\n  oscar:\n  - fog:\n      name: f\n      cluster_id: cloud\n      image: alpine\n",
    );
    let errors = messages(&clash, Severity::Error);
    assert!(
        errors.iter().any(|e| e.contains("`cloud` is not `fog`")),
        "{errors:?}"
    );
}

#[test]
fn an_output_the_nodes_cannot_write_is_an_error_not_a_silent_drop() {
    let parsed = parse(
        "functions:\n  oscar:\n  - edge:\n      name: f\n      image: alpine\n      output:\n      - storage_provider: onedata.hub\n        path: results\n",
    );
    let errors = messages(&parsed, Severity::Error);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("output to `onedata.hub`") && e.contains("cannot write")),
        "{errors:?}"
    );
}

#[test]
fn a_container_gets_outbound_network_unless_it_says_none_or_host() {
    let entry = |extra: &str| {
        parse(&format!(
            "functions:\n  oscar:\n  - edge:\n      name: f\n      image: alpine\n{extra}"
        ))
    };
    let mode = |extra: &str| {
        let (fdl, _) = entry(extra).into_result().expect("valid");
        NetworkMode::of(&fdl.functions[0].extra)
    };
    assert_eq!(mode(""), NetworkMode::Outbound, "OSCAR pods reach out");
    assert_eq!(mode("      network: true\n"), NetworkMode::Outbound);
    assert_eq!(mode("      network: outbound\n"), NetworkMode::Outbound);
    assert_eq!(mode("      network: none\n"), NetworkMode::None);
    assert_eq!(mode("      network: false\n"), NetworkMode::None);
    assert_eq!(mode("      network: host\n"), NetworkMode::Host);

    let errors = messages(&entry("      network: bridged\n"), Severity::Error);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("unknown network `bridged`")
                && e.contains("outbound (the default), none, host")
                && e.contains("test.yaml:6")),
        "{errors:?}"
    );
    let process = parse(
        "functions:\n  oscar:\n  - edge:\n      name: f\n      command: [/bin/true]\n      network: none\n",
    );
    let errors = messages(&process, Severity::Error);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("cannot be cut off") && e.contains("runtime: oci")),
        "{errors:?}"
    );
    let wasm = parse(
        "functions:\n  oscar:\n  - edge:\n      name: f\n      module: f.wasm\n      network: outbound\n",
    );
    let errors = messages(&wasm, Severity::Error);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("WASI module has no sockets")),
        "{errors:?}"
    );
}

#[test]
fn secrets_that_cannot_follow_a_job_to_a_replica_are_said_at_apply_time() {
    let parsed = parse(
        "functions:\n  oscar:\n  - edge:\n      name: f\n      image: alpine\n      environment:\n        secrets: {TOKEN: s3cr3t}\n      replicas:\n      - {type: kubernetes, cluster_id: k, priority: 0}\n      - {type: endpoint, url: 'https://faas.example/run', priority: 1}\n",
    );
    let warnings = messages(&parsed, Severity::Warning);
    let about: Vec<&String> = warnings
        .iter()
        .filter(|w| w.contains("are not sent to"))
        .collect();
    assert_eq!(about.len(), 1, "only the endpoint: {warnings:?}");
    assert!(
        about[0].contains("`endpoint` replica (https://faas.example/run)")
            && !about[0].contains("s3cr3t"),
        "{about:?}"
    );
}

#[test]
fn scars_own_yaml_from_before_the_fdl_is_read_with_its_buckets_as_folders() {
    let dir = example("scar");
    for file in ["cowsay.yaml", "scar-elixir.yaml"] {
        let (fdl, _) = fdl::parse_file(&dir.join(file)).into_result().expect(file);
        assert_eq!(fdl.functions.len(), 1, "{file}");
        assert!(
            fdl.functions[0]
                .image
                .as_deref()
                .is_some_and(|i| i.starts_with("grycap/"))
        );
    }
    let parsed = fdl::parse_file(&dir.join("video-workflow.yaml"));
    let warnings = messages(&parsed, Severity::Warning);
    assert!(
        warnings.iter().any(|w| w.contains("SCAR's own format")),
        "{warnings:?}"
    );
    let (fdl, _) = parsed.into_result().expect("valid");
    let split = &fdl.functions[0];
    assert_eq!(split.name, "scar-batch-ffmpeg-split");
    assert_eq!(
        split.platform,
        Platform::Oscar { cluster_id: None },
        "runs on the nodes"
    );
    assert_eq!(split.input[0].provider.to_string(), "minio.default");
    assert_eq!(
        split.input[0].path.to_string(),
        "scar-ffmpeg/scar-batch-ffmpeg-split/input",
        "a bare bucket is read where SCAR read it: BUCKET/FUNCTION/input"
    );
    assert_eq!(
        split.output[0].path.to_string(),
        "scar-ffmpeg/scar-batch-ffmpeg-split/video-output"
    );
    assert!(
        split
            .script
            .as_ref()
            .is_some_and(|s| s.ends_with("split-video.sh"))
    );
    let darknet = &fdl.functions[1];
    assert_eq!(
        darknet.memory,
        Some(Bytes::from_mib(3008)),
        "MiB, as SCAR counts"
    );
    assert_eq!(
        darknet.input[0].path, split.output[0].path,
        "a workflow by buckets"
    );
    // No output bucket: SCAR's supervisor uploaded into the input bucket's FUNCTION/output.
    let (fdl, _) = fdl::parse_file(&dir.join("scar-darknet-s3.yaml"))
        .into_result()
        .expect("listing 6.6");
    let f = &fdl.functions[0];
    assert_eq!(
        (f.input[0].path.to_string(), f.output[0].path.to_string()),
        (
            "scar-darknet/scar-darknet-s3/input".to_owned(),
            "scar-darknet/scar-darknet-s3/output".to_owned()
        )
    );
    // No bucket at all (listing 3.1): invoked through its own folder, as `scar run` invokes it.
    let (fdl, _) = fdl::parse_file(&dir.join("cowsay.yaml"))
        .into_result()
        .expect("listing 3.1");
    assert_eq!(
        fdl.functions[0].input[0].path.to_string(),
        "scar-cowsay/invoke"
    );
    // A bad name is still refused, where it is written.
    let bad = parse("functions:\n  'no spaces':\n    image: alpine\n");
    let errors = messages(&bad, Severity::Error);
    assert!(
        errors.iter().any(|e| e.contains("invalid name")),
        "{errors:?}"
    );
}

#[test]
fn errors_name_file_line_column_and_field_path() {
    let parsed = parse(
        "functions:\n  oscar:\n  - fog:\n      name: fire\n      image: x\n      memory: 1GB\n",
    );
    let errors = messages(&parsed, Severity::Error);
    assert_eq!(
        errors,
        vec![
            "test.yaml:6:15: functions.oscar[0].fog.memory: error: cannot read memory: `1GB` has an unknown unit `GB`: use one of Ki, Mi, Gi, Ti, k, M, G, T (memory) or m (CPU)"
        ]
    );
    assert!(parsed.fdl.is_none());
}

#[test]
fn unknown_fields_are_kept_and_warned_with_a_suggestion() {
    let parsed = parse(
        "functions:\n  oscar:\n  - fog:\n      name: fire\n      image: x\n      scirpt: run.sh\n      expose: {min_scale: 1}\n",
    );
    let warnings = messages(&parsed, Severity::Warning);
    assert!(warnings.iter().any(|w| w.starts_with("test.yaml:6:7: functions.oscar[0].fog.scirpt: warning: unknown field `scirpt`; did you mean `script`?")), "{warnings:?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("`expose` is not supported by Spillway yet")),
        "{warnings:?}"
    );
    let (fdl, _) = parsed.into_result().expect("warnings are not errors");
    assert_eq!(fdl.functions[0].extra["scirpt"], "run.sh");
    assert_eq!(fdl.functions[0].extra["expose"]["min_scale"], 1);
}

#[test]
fn every_bad_field_is_reported_in_one_pass() {
    let parsed = parse(
        "functions:\n  oscar:\n  - fog:\n      name: Fire_Detect\n      runtime: docker\n      cpu: lots\n      input:\n        - path: ../escape\n      replicas:\n        - type: carrier-pigeon\n",
    );
    let errors = messages(&parsed, Severity::Error);
    let expect = [
        "functions.oscar[0].fog.name: error: invalid name `Fire_Detect`",
        "functions.oscar[0].fog.runtime: error: unknown runtime `docker`: expected one of oci, wasm, process",
        "functions.oscar[0].fog.cpu: error: cannot read cpu: `lots` is not a number",
        "functions.oscar[0].fog.input[0]: error: missing `storage_provider`",
        "functions.oscar[0].fog.input[0].path: error: invalid path `../escape`",
        "functions.oscar[0].fog.replicas[0].type: error: unknown replica type `carrier-pigeon`",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|m| m.contains(e)),
            "missing {e:?} in {errors:#?}"
        );
    }
}

#[test]
fn a_function_with_nothing_to_run_is_an_error() {
    let parsed = parse("functions:\n  oscar:\n  - fog:\n      name: fire\n");
    let errors = messages(&parsed, Severity::Error);
    assert!(errors[0].contains("nothing to run"), "{errors:?}");
    let parsed = parse("functions:\n  oscar:\n  - fog:\n      name: fire\n      runtime: wasm\n");
    assert!(messages(&parsed, Severity::Error)[0].contains("runtime `wasm` needs `module`"));
}

#[test]
fn yaml_syntax_errors_and_duplicates_point_at_the_spot() {
    let parsed = parse("functions:\n  oscar: [\n");
    let errors = messages(&parsed, Severity::Error);
    assert!(errors[0].starts_with("test.yaml:"), "{errors:?}");
    assert!(errors[0].contains("not valid YAML"), "{errors:?}");
    let parsed =
        parse("functions:\n  oscar:\n  - fog:\n      name: a\n      name: b\n      image: x\n");
    let errors = messages(&parsed, Severity::Error);
    assert!(
        errors[0].contains("`name` is defined twice (first on line 4)"),
        "{errors:?}"
    );
    assert!(errors[0].starts_with("test.yaml:5:"), "{errors:?}");
}

#[test]
fn duplicate_function_names_on_one_cluster_are_refused() {
    let parsed = parse(
        "functions:\n  oscar:\n  - fog: {name: a, image: x}\n  - fog: {name: a, image: y}\n  - cloud: {name: a, image: z}\n",
    );
    let errors = messages(&parsed, Severity::Error);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("function `a` is defined twice (first at test.yaml:3:"),
        "{errors:?}"
    );
}

#[test]
fn staging_variables_cannot_be_overridden() {
    let parsed = parse(
        "functions:\n  oscar:\n  - fog:\n      name: a\n      image: x\n      environment:\n        Variables:\n          JOB_ID: mine\n          1BAD: x\n",
    );
    assert!(
        messages(&parsed, Severity::Warning)
            .iter()
            .any(|w| w.contains("`JOB_ID` is set by the agent"))
    );
    assert!(
        messages(&parsed, Severity::Error)
            .iter()
            .any(|w| w.contains("`1BAD` is not a valid environment variable name"))
    );
}

#[test]
fn an_empty_or_functionless_document_says_what_is_missing() {
    let parsed = parse("clusters: {}\n");
    assert!(messages(&parsed, Severity::Error)[0].contains("missing `functions`"));
    let parsed = parse("");
    assert!(!messages(&parsed, Severity::Error).is_empty());
}

#[test]
fn kubernetes_and_lambda_replicas_are_read_with_their_settings() {
    let parsed = parse(
        "functions:\n  oscar:\n  - fog:\n      name: f\n      runtime: process\n      command: [\"true\"]\n      replicas:\n      - {type: kubernetes, namespace: jobs, priority: 1}\n      - {type: lambda, function_name: fire, region: eu-west-1, invocation_type: Event, priority: 2}\n      - {type: lambda, function_url: 'https://abc.lambda-url.eu-west-1.on.aws/', auth: none, priority: 3}\n",
    );
    let (fdl, _) = parsed.into_result().expect("valid");
    let r = &fdl.functions[0].replicas;
    assert_eq!(
        r[0].target,
        ReplicaTarget::Kubernetes {
            cluster_id: "default".into(),
            namespace: Some("jobs".into()),
            image: None
        }
    );
    assert_eq!(
        r[1].target,
        ReplicaTarget::Lambda {
            target: LambdaTarget::Function {
                name: "fire".into(),
                region: Some("eu-west-1".into())
            },
            asynchronous: true
        }
    );
    assert_eq!(
        r[2].target,
        ReplicaTarget::Lambda {
            target: LambdaTarget::Url {
                url: "https://abc.lambda-url.eu-west-1.on.aws/".into(),
                iam: false
            },
            asynchronous: false
        }
    );
}

#[test]
fn a_lambda_replica_without_a_function_or_with_both_says_which_to_give() {
    for replica in [
        "{type: lambda}",
        "{type: lambda, function_name: a, function_url: 'https://b'}",
    ] {
        let text = format!(
            "functions:\n  oscar:\n  - fog:\n      name: f\n      runtime: process\n      command: [\"true\"]\n      replicas: [{replica}]\n"
        );
        let errors = parse(&text).into_result().unwrap_err();
        let text = format!("{errors:?}");
        assert!(text.contains("exactly one of `function_name`"), "{text}");
    }
}

#[test]
fn deeply_nested_documents_are_refused_without_overflowing_the_stack() {
    // Run on a small stack: the YAML reader recurses once per level, the check must not.
    let outcome = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(|| {
            let block = format!("functions:\n{}1\n", "- ".repeat(200_000));
            let flow = format!("functions: {}1{}\n", "[".repeat(200), "]".repeat(200));
            let mut mappings = String::from("functions:\n");
            for depth in 1..100 {
                mappings.push_str(&format!("{}k{depth}:\n", "  ".repeat(depth)));
            }
            [block, flow, mappings]
                .iter()
                .map(|doc| messages(&parse(doc), Severity::Error))
                .collect::<Vec<_>>()
        })
        .expect("thread")
        .join()
        .expect("no stack overflow");
    for errors in outcome {
        assert!(
            errors.len() == 1 && errors[0].contains("nests deeper than 64 levels"),
            "{errors:?}"
        );
        assert!(errors[0].starts_with("test.yaml:"), "{errors:?}");
    }
}

#[test]
fn numbers_that_would_overflow_later_are_refused_with_their_bound() {
    let fdl = |extra: &str| {
        format!(
            "functions:\n  oscar:\n  - edge:\n      name: f\n      command: 'true'\n{extra}      input: [{{storage_provider: minio, path: a/in}}]\n"
        )
    };
    for (extra, expected) in [
        (
            "      timeout: 18446744073709551615\n",
            "is too long: at most 604800 seconds",
        ),
        ("      timeout: 99999999999999999999\n", "is not a duration"),
        ("      timeout: 307445734561825861m\n", "is not a duration"),
        ("      timeout: 8d\n", "is not a duration"),
        ("      timeout: 200h\n", "is too long"),
        (
            "      rescheduler_threshold: 18446744073709551615\n",
            "is too large: at most 604800",
        ),
        (
            "      max_concurrency: 4294967296\n",
            "is too large: at most 100000",
        ),
        (
            "      replicas: [{type: endpoint, url: 'http://x', priority: 4294967296}]\n",
            "is too large: at most 1000000",
        ),
    ] {
        let errors = messages(&parse(&fdl(extra)), Severity::Error);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{extra}: {errors:?}"
        );
    }
    assert!(
        messages(&parse(&fdl("      timeout: 7d\n")), Severity::Error)
            .iter()
            .any(|e| e.contains("not a duration")),
        "no day unit"
    );
    assert!(messages(&parse(&fdl("      timeout: 168h\n")), Severity::Error).is_empty());
}

#[test]
fn an_oversized_document_is_refused_before_it_is_read() {
    let huge = format!("functions: {{}}\n#{}\n", "x".repeat(fdl::MAX_BYTES));
    let errors = messages(&parse(&huge), Severity::Error);
    assert!(
        errors.iter().any(|e| e.contains("an FDL file is at most")),
        "{errors:?}"
    );
}

#[test]
fn oscar_service_labels_are_kept_for_selectors_and_bad_ones_are_errors() {
    let entry = |labels: &str| {
        format!(
            "functions:\n  oscar:\n  - edge:\n      name: gray\n      runtime: wasm\n      module: gray.wasm\n      labels: {labels}\n"
        )
    };
    let (fdl, _) = parse(&entry("{team: vision, tier: 2}"))
        .into_result()
        .expect("valid");
    assert_eq!(fdl.functions[0].labels["team"], "vision");
    assert_eq!(fdl.functions[0].labels["tier"], "2");

    let parsed = parse(&entry("{'bad key': x}"));
    let errors = messages(&parsed, Severity::Error);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("labels.bad key") && e.contains("a label key is")),
        "{errors:?}"
    );
    let many: Vec<String> = (0..65).map(|i| format!("k{i}: v")).collect();
    let parsed = parse(&entry(&format!("{{{}}}", many.join(", "))));
    let errors = messages(&parsed, Severity::Error);
    assert!(
        errors.iter().any(|e| e.contains("at most 64 labels")),
        "{errors:?}"
    );
}
