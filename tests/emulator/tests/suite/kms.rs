//! The KMS JSON API over real HTTP on its own port, signed by the `aws-sigv4` crate for service
//! `kms`: GenerateDataKey/Decrypt round trips, the exact encryption context, disabled, unknown
//! and denied keys, the signing scope; and DescribeClusters on the ECS port.

use crate::common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{ECS, Reply, Signer, call};
use ecs_exec_emulator::{
    Config, CredentialsConfig, DEFAULT_KMS_KEY_ARN, Emulator, EmulatorHandle, KmsKeyConfig,
};
use serde_json::{Value, json};

const DISABLED_KEY: &str =
    "arn:aws:kms:us-east-1:123456789012:key/0a0b0c0d-0000-4000-8000-00000000dead";

async fn start() -> EmulatorHandle {
    let mut config = Config::default();
    config.kms.keys.push(KmsKeyConfig {
        arn: DISABLED_KEY.to_string(),
        enabled: false,
        alias: None,
    });
    config.kms.keys.push(KmsKeyConfig {
        arn: DEFAULT_KMS_KEY_ARN.to_string(),
        enabled: true,
        alias: Some("alias/ecs-exec".to_string()),
    });
    config.credentials.push(CredentialsConfig {
        access_key_id: "AKIANOKMSEXAMPLE0001".into(),
        secret_access_key: "no-kms-secret".into(),
        session_token: None,
        deny: vec!["kms:GenerateDataKey".into(), "kms:Decrypt".into()],
    });
    Emulator::start(config).await.unwrap()
}

fn kms_signer(handle: &EmulatorHandle) -> Signer {
    let mut signer = Signer::for_handle(handle);
    signer.service = "kms".into();
    signer
}

async fn kms(handle: &EmulatorHandle, signer: &Signer, operation: &str, body: Value) -> Reply {
    call(
        handle.kms_local_addr(),
        Some(signer),
        &format!("TrentService.{operation}"),
        &body,
    )
    .await
}

fn ssm_context() -> Value {
    json!({"aws:ssm:SessionId": "ecs-execute-command-0123", "aws:ssm:TargetId": "ecs:secure_t_r"})
}

fn assert_error(reply: &Reply, code: &str) {
    assert_eq!(reply.status, 400, "{:?}", reply.json);
    assert_eq!(reply.json["__type"], code, "{:?}", reply.json);
    assert_eq!(reply.headers["x-amzn-errortype"], code);
    assert!(reply.json["message"].is_string());
}

#[tokio::test]
async fn a_data_key_round_trips_only_with_its_exact_context() {
    let handle = start().await;
    let signer = kms_signer(&handle);
    assert_ne!(handle.kms_local_addr(), handle.local_addr());
    assert!(
        handle
            .aws_env()
            .contains(&("AWS_ENDPOINT_URL_KMS".to_string(), handle.kms_endpoint()))
    );
    let generated = kms(
        &handle,
        &signer,
        "GenerateDataKey",
        json!({"KeyId": DEFAULT_KMS_KEY_ARN, "NumberOfBytes": 64, "EncryptionContext": ssm_context()}),
    )
    .await;
    assert_eq!(generated.status, 200, "{:?}", generated.json);
    assert_eq!(
        generated.headers["content-type"],
        "application/x-amz-json-1.1"
    );
    assert_eq!(generated.json["KeyId"], DEFAULT_KMS_KEY_ARN);
    let plaintext = BASE64
        .decode(generated.json["Plaintext"].as_str().unwrap())
        .unwrap();
    assert_eq!(plaintext.len(), 64);
    assert_eq!(handle.issued_data_keys(), vec![plaintext.clone()]);
    let blob = generated.json["CiphertextBlob"].as_str().unwrap();
    assert!(
        !common::contains(&BASE64.decode(blob).unwrap(), &plaintext),
        "the blob does not carry the key in the clear"
    );

    let decrypted = kms(
        &handle,
        &signer,
        "Decrypt",
        json!({"CiphertextBlob": blob, "EncryptionContext": ssm_context(), "KeyId": DEFAULT_KMS_KEY_ARN}),
    )
    .await;
    assert_eq!(decrypted.status, 200, "{:?}", decrypted.json);
    assert_eq!(decrypted.json["Plaintext"], generated.json["Plaintext"]);
    assert_eq!(decrypted.json["KeyId"], DEFAULT_KMS_KEY_ARN);

    let mut changed = ssm_context();
    changed["aws:ssm:TargetId"] = json!("ecs:secure_t_other");
    let mut extra = ssm_context();
    extra["aws:ssm:RandomChallenge"] = json!("abc");
    let missing = json!({"aws:ssm:SessionId": "ecs-execute-command-0123"});
    for context in [changed, extra, missing, json!({})] {
        let reply = kms(
            &handle,
            &signer,
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": context}),
        )
        .await;
        assert_error(&reply, "InvalidCiphertextException");
    }
    let forged = kms(
        &handle,
        &signer,
        "Decrypt",
        json!({"CiphertextBlob": BASE64.encode([7u8; 120]), "EncryptionContext": ssm_context()}),
    )
    .await;
    assert_error(&forged, "InvalidCiphertextException");
}

#[tokio::test]
async fn keys_are_found_by_id_and_alias_and_refused_when_disabled_or_unknown() {
    let handle = start().await;
    let signer = kms_signer(&handle);
    let key_id = DEFAULT_KMS_KEY_ARN.rsplit('/').next().unwrap();
    for reference in [key_id, "alias/ecs-exec"] {
        let reply = kms(
            &handle,
            &signer,
            "GenerateDataKey",
            json!({"KeyId": reference, "KeySpec": "AES_256"}),
        )
        .await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
        assert_eq!(reply.json["KeyId"], DEFAULT_KMS_KEY_ARN);
    }
    let disabled = kms(
        &handle,
        &signer,
        "GenerateDataKey",
        json!({"KeyId": DISABLED_KEY, "NumberOfBytes": 64}),
    )
    .await;
    assert_error(&disabled, "DisabledException");
    assert!(
        disabled.json["message"]
            .as_str()
            .unwrap()
            .contains(DISABLED_KEY)
    );
    let unknown = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-000000000000";
    let missing = kms(
        &handle,
        &signer,
        "GenerateDataKey",
        json!({"KeyId": unknown, "NumberOfBytes": 64}),
    )
    .await;
    assert_error(&missing, "NotFoundException");
    assert!(missing.json["message"].as_str().unwrap().contains(unknown));
    let described = kms(
        &handle,
        &signer,
        "DescribeKey",
        json!({"KeyId": DISABLED_KEY}),
    )
    .await;
    assert_eq!(described.status, 200);
    assert_eq!(described.json["KeyMetadata"]["KeyState"], "Disabled");
    assert_eq!(described.json["KeyMetadata"]["Arn"], DISABLED_KEY);
    let unknown_operation = kms(&handle, &signer, "Encrypt", json!({})).await;
    assert_error(&unknown_operation, "UnknownOperationException");
}

#[tokio::test]
async fn denied_callers_get_access_denied_naming_the_action_and_key() {
    let handle = start().await;
    let mut signer = kms_signer(&handle);
    signer.access_key_id = "AKIANOKMSEXAMPLE0001".into();
    signer.secret_access_key = "no-kms-secret".into();
    let reply = kms(
        &handle,
        &signer,
        "GenerateDataKey",
        json!({"KeyId": DEFAULT_KMS_KEY_ARN, "NumberOfBytes": 64, "EncryptionContext": ssm_context()}),
    )
    .await;
    assert_error(&reply, "AccessDeniedException");
    let message = reply.json["message"].as_str().unwrap();
    assert!(
        message.contains("is not authorized to perform: kms:GenerateDataKey on resource: ")
            && message.contains(DEFAULT_KMS_KEY_ARN),
        "{message}"
    );
    assert!(handle.issued_data_keys().is_empty());
    // The allowed caller's blob cannot be opened by the denied one either.
    let allowed = kms(
        &handle,
        &kms_signer(&handle),
        "GenerateDataKey",
        json!({"KeyId": DEFAULT_KMS_KEY_ARN, "NumberOfBytes": 64}),
    )
    .await;
    let denied = kms(
        &handle,
        &signer,
        "Decrypt",
        json!({"CiphertextBlob": allowed.json["CiphertextBlob"]}),
    )
    .await;
    assert_error(&denied, "AccessDeniedException");
    assert!(
        denied.json["message"]
            .as_str()
            .unwrap()
            .contains("kms:Decrypt")
    );
}

#[tokio::test]
async fn requests_must_be_signed_for_kms() {
    let handle = start().await;
    let body = json!({"KeyId": DEFAULT_KMS_KEY_ARN, "NumberOfBytes": 64});
    let ecs_scoped = Signer::for_handle(&handle);
    let reply = kms(&handle, &ecs_scoped, "GenerateDataKey", body.clone()).await;
    assert_error(&reply, "InvalidSignatureException");
    assert!(
        reply.json["message"].as_str().unwrap().contains("'kms'"),
        "{:?}",
        reply.json
    );
    let mut wrong_secret = kms_signer(&handle);
    wrong_secret.secret_access_key = "not-the-secret".into();
    let reply = kms(&handle, &wrong_secret, "GenerateDataKey", body.clone()).await;
    assert_error(&reply, "InvalidSignatureException");
    let unsigned = call(
        handle.kms_local_addr(),
        None,
        "TrentService.GenerateDataKey",
        &body,
    )
    .await;
    assert_error(&unsigned, "MissingAuthenticationTokenException");
    // ECS calls do not work on the KMS port, nor KMS calls on the ECS port.
    let ecs_on_kms = call(
        handle.kms_local_addr(),
        Some(&kms_signer(&handle)),
        &format!("{ECS}.ListTasks"),
        &json!({"cluster": "demo"}),
    )
    .await;
    assert_error(&ecs_on_kms, "UnknownOperationException");
    let kms_on_ecs = call(
        handle.local_addr(),
        Some(&kms_signer(&handle)),
        "TrentService.GenerateDataKey",
        &body,
    )
    .await;
    assert_eq!(kms_on_ecs.status, 400);
    assert!(handle.issued_data_keys().is_empty());
    assert!(handle.counters().signature_failures >= 3);
}

#[tokio::test]
async fn describe_clusters_shows_the_exec_configuration() {
    let handle = start().await;
    let signer = Signer::for_handle(&handle);
    let reply = call(
        handle.local_addr(),
        Some(&signer),
        &format!("{ECS}.DescribeClusters"),
        &json!({"clusters": ["secure", "demo", "missing"], "include": ["CONFIGURATIONS"]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let clusters = reply.json["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    let secure = &clusters[0];
    assert_eq!(
        secure["clusterArn"],
        "arn:aws:ecs:us-east-1:123456789012:cluster/secure"
    );
    assert_eq!(secure["status"], "ACTIVE");
    let exec = &secure["configuration"]["executeCommandConfiguration"];
    assert_eq!(exec["kmsKeyId"], DEFAULT_KMS_KEY_ARN);
    assert_eq!(exec["logging"], "DEFAULT");
    assert!(
        clusters[1]["configuration"]["executeCommandConfiguration"]
            .get("kmsKeyId")
            .is_none()
    );
    assert_eq!(
        reply.json["failures"],
        json!([{"arn": "arn:aws:ecs:us-east-1:123456789012:cluster/missing", "reason": "MISSING"}])
    );
}
