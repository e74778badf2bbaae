//! moto's server as the S3 API (PyPI `moto[server]`), on a loopback port, with request
//! signatures enforced: the first three requests create an IAM user, its access key and an
//! allow-all policy; from then on every request must be signed with that key (a wrong secret
//! is refused with 403, as AWS would). boto3 (which moto brings) plays the user's own tools.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

pub struct Moto {
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
    child: Child,
}

impl Moto {
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (pip install 'moto[server]') must be installed");
        let up = wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "moto_server did not start");
        let mut moto = Self {
            port,
            access_key: "setup".into(),
            secret_key: "setup".into(),
            child,
        };
        let keys = moto.python(
            "iam = client('iam')\n\
             iam.create_user(UserName='spillway')\n\
             k = iam.create_access_key(UserName='spillway')['AccessKey']\n\
             iam.put_user_policy(UserName='spillway', PolicyName='all', PolicyDocument='{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}]}')\n\
             print(k['AccessKeyId'], k['SecretAccessKey'])",
        );
        let mut parts = keys.split_whitespace();
        moto.access_key = parts.next().expect("access key").to_owned();
        moto.secret_key = parts.next().expect("secret key").to_owned();
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs `body` in Python with `client(service)` (boto3 against this server with the
    /// current keys) and `s3 = client('s3')`; returns its stdout.
    pub fn python(&self, body: &str) -> String {
        let script = format!(
            "import boto3\n\
             def client(service):\n    return boto3.client(service, endpoint_url='{}', region_name='us-east-1', aws_access_key_id='{}', aws_secret_access_key='{}')\n\
             {}\n",
            self.endpoint(),
            self.access_key,
            self.secret_key,
            body
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3 with boto3 (moto brings it)");
        assert!(
            out.status.success(),
            "python failed:\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The object's content, or `None` when it does not exist (yet).
    pub fn get(&self, bucket: &str, key: &str) -> Option<String> {
        let out = self.python(&format!(
            "try:\n    print(client('s3').get_object(Bucket='{bucket}', Key='{key}')['Body'].read().decode(), end='')\nexcept client('s3').exceptions.NoSuchKey:\n    print('\\0', end='')"
        ));
        (out != "\0").then_some(out)
    }

    /// A Lambda function `name` in moto's Docker-free Lambda backend: `Invoke` answers with the
    /// next queued result ([`Moto::queue_lambda_results`]), or echoes the payload. Signatures
    /// are checked as for every request.
    pub fn lambda_function(&self, name: &str) {
        self.python(&format!(
            "import json, urllib.request\n\
             role = client('iam').create_role(RoleName='run-{name}', AssumeRolePolicyDocument='{{}}')['Role']['Arn']\n\
             client('lambda').create_function(FunctionName='{name}', Runtime='provided.al2023', Role=role, Handler='bootstrap', Code={{'ZipFile': b'spillway-agent'}})\n\
             req = urllib.request.Request('{}/moto-api/config', data=json.dumps({{'lambda': {{'use_docker': False}}}}).encode(), method='POST')\n\
             urllib.request.urlopen(req).read()",
            self.endpoint()
        ));
    }

    /// What the next `Invoke` calls answer, in order (region us-east-1).
    pub fn queue_lambda_results(&self, results: &[String]) {
        self.python(&format!(
            "import json, urllib.request\n\
             body = json.dumps({{'results': json.loads({:?}), 'region': 'us-east-1'}}).encode()\n\
             urllib.request.urlopen(urllib.request.Request('{}/moto-api/static/lambda-simple/response', data=body, method='POST')).read()",
            serde_json::to_string(results).unwrap_or_default(),
            self.endpoint()
        ));
    }

    pub fn put(&self, bucket: &str, key: &str, content: &str) {
        self.python(&format!(
            "client('s3').put_object(Bucket='{bucket}', Key='{key}', Body={content:?}.encode())"
        ));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
