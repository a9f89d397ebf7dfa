//! STS GetCallerIdentity and IAM SimulatePrincipalPolicy, in the AWS Query protocol
//! (form-encoded `POST /` with an `Action`, XML answers), for `ecs-exec doctor`.
//!
//! Identities: the N-th configured credentials are `arn:aws:iam::ACCOUNT:user/emulator` (the
//! first) or `user/emulator-N`; a task role is the `taskRoleArn` of a task definition. The policy
//! simulator allows every action except those in the principal's deny list (`deny` of the
//! credentials, `task_role_deny` of the service). Pure: the server verifies the signature first.

use crate::config::{Config, CredentialsConfig};
use crate::world::World;

/// The Query operations served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryOperation {
    /// STS GetCallerIdentity.
    GetCallerIdentity,
    /// IAM SimulatePrincipalPolicy.
    SimulatePrincipalPolicy,
}

impl QueryOperation {
    /// Parses the `Action` parameter.
    pub fn from_action(action: &str) -> Option<Self> {
        match action {
            "GetCallerIdentity" => Some(Self::GetCallerIdentity),
            "SimulatePrincipalPolicy" => Some(Self::SimulatePrincipalPolicy),
            _ => None,
        }
    }

    /// The SigV4 service name.
    pub fn signing_service(self) -> &'static str {
        match self {
            Self::GetCallerIdentity => "sts",
            Self::SimulatePrincipalPolicy => "iam",
        }
    }

    /// IAM is a global service: its requests are signed for us-east-1 whatever the region.
    pub fn signing_region(self, region: &str) -> String {
        match self {
            Self::GetCallerIdentity => region.to_string(),
            Self::SimulatePrincipalPolicy => "us-east-1".to_string(),
        }
    }

    /// The IAM action name.
    pub fn iam_action(self) -> &'static str {
        match self {
            Self::GetCallerIdentity => "sts:GetCallerIdentity",
            Self::SimulatePrincipalPolicy => "iam:SimulatePrincipalPolicy",
        }
    }

    fn xml_namespace(self) -> &'static str {
        match self {
            Self::GetCallerIdentity => "https://sts.amazonaws.com/doc/2011-06-15/",
            Self::SimulatePrincipalPolicy => "https://iam.amazonaws.com/doc/2010-05-08/",
        }
    }
}

/// A Query protocol error: HTTP status, code and message, sent as an `ErrorResponse`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct QueryError {
    /// HTTP status.
    pub status: u16,
    /// Error code, e.g. `AccessDenied`.
    pub code: String,
    /// Message.
    pub message: String,
}

impl QueryError {
    /// An error with that status, code and message.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The XML body AWS sends for this error.
    pub fn body(&self, request_id: &str) -> String {
        format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
            escape(&self.code),
            escape(&self.message)
        )
    }
}

/// The ARN of the `index`-th configured credentials.
pub fn user_arn(account_id: &str, index: usize) -> String {
    if index == 0 {
        format!("arn:aws:iam::{account_id}:user/emulator")
    } else {
        format!("arn:aws:iam::{account_id}:user/emulator-{}", index + 1)
    }
}

/// Decodes an `application/x-www-form-urlencoded` body; None when it is not valid UTF-8 or has
/// a bad escape.
pub fn parse_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(name)?, percent_decode(value)?))
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `NAME.member.1`, `NAME.member.2`… in order.
fn members<'a>(params: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    let prefix = format!("{name}.member.");
    let mut found: Vec<(usize, &str)> = params
        .iter()
        .filter_map(|(n, v)| Some((n.strip_prefix(&prefix)?.parse().ok()?, v.as_str())))
        .collect();
    found.sort_by_key(|(index, _)| *index);
    found.into_iter().map(|(_, v)| v).collect()
}

/// Runs one operation for the identity that signed it; the answer is the XML document.
pub fn handle(
    config: &Config,
    world: &World,
    operation: QueryOperation,
    identity: &CredentialsConfig,
    params: &[(String, String)],
    request_id: &str,
) -> Result<String, QueryError> {
    let index = config
        .credentials
        .iter()
        .position(|c| c.access_key_id == identity.access_key_id)
        .unwrap_or(0);
    let caller = user_arn(&config.account_id, index);
    if identity.deny.iter().any(|d| d == operation.iam_action()) {
        return Err(QueryError::new(
            403,
            "AccessDenied",
            format!(
                "User: {caller} is not authorized to perform: {} because no identity-based policy allows the {} action",
                operation.iam_action(),
                operation.iam_action()
            ),
        ));
    }
    let result = match operation {
        QueryOperation::GetCallerIdentity => format!(
            "<Arn>{}</Arn><UserId>AIDAEMULATOR{index:08}</UserId><Account>{}</Account>",
            escape(&caller),
            escape(&config.account_id)
        ),
        QueryOperation::SimulatePrincipalPolicy => simulate(config, world, params)?,
    };
    let name = match operation {
        QueryOperation::GetCallerIdentity => "GetCallerIdentity",
        QueryOperation::SimulatePrincipalPolicy => "SimulatePrincipalPolicy",
    };
    Ok(format!(
        "<{name}Response xmlns=\"{}\"><{name}Result>{result}</{name}Result><ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{name}Response>",
        operation.xml_namespace()
    ))
}

fn simulate(
    config: &Config,
    world: &World,
    params: &[(String, String)],
) -> Result<String, QueryError> {
    let source = param(params, "PolicySourceArn")
        .ok_or_else(|| QueryError::new(400, "ValidationError", "PolicySourceArn is required."))?;
    let actions = members(params, "ActionNames");
    if actions.is_empty() {
        return Err(QueryError::new(
            400,
            "ValidationError",
            "ActionNames must have at least one member.",
        ));
    }
    let deny: &[String] = if let Some(index) =
        (0..config.credentials.len()).find(|&index| user_arn(&config.account_id, index) == source)
    {
        &config.credentials[index].deny
    } else if let Some(definition) = world
        .task_definitions
        .iter()
        .find(|d| d.task_role_arn.as_deref() == Some(source))
    {
        &definition.setup.task_role_deny
    } else {
        return Err(QueryError::new(
            404,
            "NoSuchEntity",
            format!("The user or role with ARN {source} cannot be found."),
        ));
    };
    let resources = members(params, "ResourceArns");
    let resources = if resources.is_empty() {
        vec!["*"]
    } else {
        resources
    };
    let mut results = String::new();
    for action in actions {
        for resource in &resources {
            let decision = if deny.iter().any(|d| d == action) {
                "implicitDeny"
            } else {
                "allowed"
            };
            results.push_str(&format!(
                "<member><EvalActionName>{}</EvalActionName><EvalResourceName>{}</EvalResourceName><EvalDecision>{decision}</EvalDecision><MatchedStatements/><MissingContextValues/></member>",
                escape(action),
                escape(resource)
            ));
        }
    }
    Ok(format!(
        "<IsTruncated>false</IsTruncated><EvaluationResults>{results}</EvaluationResults>"
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(text: &str) -> Vec<(String, String)> {
        parse_form(text.as_bytes()).unwrap()
    }

    #[test]
    fn forms_decode() {
        assert_eq!(
            form("Action=GetCallerIdentity&Version=2011-06-15&A=a%3Ab+c"),
            vec![
                ("Action".into(), "GetCallerIdentity".into()),
                ("Version".into(), "2011-06-15".into()),
                ("A".into(), "a:b c".into())
            ]
        );
        assert!(parse_form(b"A=%zz").is_none());
        assert!(parse_form(b"A=%4").is_none());
    }

    #[test]
    fn caller_identity_names_the_user() {
        let config = Config::default();
        let world = World::from_config(&config);
        let xml = handle(
            &config,
            &world,
            QueryOperation::GetCallerIdentity,
            &config.credentials[0],
            &[],
            "r",
        )
        .unwrap();
        assert!(xml.contains("<Arn>arn:aws:iam::123456789012:user/emulator</Arn>"));
        assert!(xml.contains("<Account>123456789012</Account>"));
    }

    #[test]
    fn simulation_denies_what_the_principal_is_denied() {
        let mut config = Config::default();
        config.credentials[0].deny = vec!["ecs:ExecuteCommand".into()];
        config.clusters[0].services[0].setup.task_role_deny = vec!["kms:Decrypt".into()];
        let world = World::from_config(&config);
        let simulate = |source: &str| {
            handle(
                &config,
                &world,
                QueryOperation::SimulatePrincipalPolicy,
                &config.credentials[0],
                &form(&format!(
                    "PolicySourceArn={source}&ActionNames.member.2=kms%3ADecrypt&ActionNames.member.1=ecs%3AExecuteCommand"
                )),
                "r",
            )
        };
        let user = simulate("arn:aws:iam::123456789012:user/emulator").unwrap();
        assert!(user.contains("<EvalActionName>ecs:ExecuteCommand</EvalActionName><EvalResourceName>*</EvalResourceName><EvalDecision>implicitDeny</EvalDecision>"));
        assert!(user.contains("<EvalActionName>kms:Decrypt</EvalActionName><EvalResourceName>*</EvalResourceName><EvalDecision>allowed</EvalDecision>"));
        let role = simulate("arn:aws:iam::123456789012:role/demo-web-task-role").unwrap();
        assert!(role.contains("<EvalActionName>kms:Decrypt</EvalActionName><EvalResourceName>*</EvalResourceName><EvalDecision>implicitDeny</EvalDecision>"));
        assert_eq!(
            simulate("arn:aws:iam::123456789012:role/nope")
                .unwrap_err()
                .code,
            "NoSuchEntity"
        );
    }

    #[test]
    fn a_denied_simulation_is_access_denied() {
        let mut config = Config::default();
        config.credentials[0].deny = vec!["iam:SimulatePrincipalPolicy".into()];
        let world = World::from_config(&config);
        let error = handle(
            &config,
            &world,
            QueryOperation::SimulatePrincipalPolicy,
            &config.credentials[0],
            &form("PolicySourceArn=x&ActionNames.member.1=a"),
            "r",
        )
        .unwrap_err();
        assert_eq!((error.status, error.code.as_str()), (403, "AccessDenied"));
        assert!(error.body("r").contains("<Code>AccessDenied</Code>"));
    }
}
