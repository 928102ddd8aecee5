//! What the `natter` command does: `login`, `send` and `listen`, as plain async functions. The
//! binary parses arguments, calls these and prints what `login` and `send` return; `listen`
//! prints its events to stdout itself.
//!
//! The config file is JSON: `{"server": …, "token": …, "user": {…}, "state": {…}}`. The token is
//! a secret, so the file is written readable by its owner only. `state` is where `listen` resumes.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use natter_proto::{
    Ack, Content, Conversation, ConversationId, ConversationKind, CreateConversationRequest,
    ErrorCode, LoginRequest, LoginResponse, RegisterRequest, SystemEvent, User, UserId,
};
use serde::{Deserialize, Serialize};

use crate::client::{Client, ClientConfig, ClientEvent};
use crate::error::ClientError;
use crate::rest::RestClient;
use crate::state::ClientState;

/// How long `send` waits for the server to acknowledge the message.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `listen` saves its state, so that a crash loses little.
const SAVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long `listen` waits for the members of a conversation, to name a sender.
const NAME_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The device name the CLI logs in with.
const DEVICE_NAME: &str = "natter-cli";

/// The contents of the CLI's config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CliConfig {
    /// The server address, like `http://127.0.0.1:8080`.
    pub server: String,
    /// This device's token.
    pub token: String,
    /// Who is logged in.
    pub user: User,
    /// Where `listen` resumes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ClientState>,
}

/// The config file to use: `$NATTER_CLIENT_CONFIG`, else `$XDG_CONFIG_HOME/natter/client.json`,
/// else `~/.config/natter/client.json` (else `natter-client.json` here, when there is no home).
///
/// Not `$NATTER_CONFIG`: that names the server's TOML file, which `login` would overwrite.
pub fn default_config_path() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(path) = var("NATTER_CLIENT_CONFIG") {
        return PathBuf::from(path);
    }
    if let Some(dir) = var("XDG_CONFIG_HOME") {
        return PathBuf::from(dir).join("natter").join("client.json");
    }
    match var("HOME") {
        Some(home) => PathBuf::from(home)
            .join(".config")
            .join("natter")
            .join("client.json"),
        None => PathBuf::from("natter-client.json"),
    }
}

/// Read the config file written by [`login`].
pub fn load_config(path: &Path) -> Result<CliConfig, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ClientError::Config(format!(
            "cannot read {} ({e}); run `natter login` first",
            path.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| ClientError::Config(format!("{} is not a valid config: {e}", path.display())))
}

/// Write the config file atomically (a crash leaves the old one or the new one, never half),
/// readable by its owner only since it holds the token.
pub fn save_config(path: &Path, config: &CliConfig) -> Result<(), ClientError> {
    let io =
        |e: std::io::Error| ClientError::Config(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = serde_json::to_string_pretty(config)
        .map_err(|e| ClientError::Config(format!("cannot encode the config: {e}")))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.write_all(b"\n").map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)
}

/// `natter login`: log in (registering the account first if it does not exist and
/// `register_if_missing` is set) and save the server, token and user to `config_path`. Returns
/// the login (user, device id, token) for the caller to report.
pub async fn login(
    server: &str,
    username: &str,
    password: &str,
    register_if_missing: bool,
    config_path: &Path,
) -> Result<LoginResponse, ClientError> {
    let rest = RestClient::new(server)?;
    let login = LoginRequest {
        username: username.to_string(),
        password: password.to_string(),
        device_name: Some(DEVICE_NAME.to_string()),
    };
    let (response, registered) = match rest.login(&login).await {
        Ok(response) => (response, false),
        // An unknown user may be reported as not found or as a wrong password, depending on
        // whether the server hides which usernames exist; registering tells them apart.
        Err(error)
            if register_if_missing
                && matches!(
                    error.code(),
                    Some(ErrorCode::NotFound | ErrorCode::WrongPassword | ErrorCode::Unauthorized)
                ) =>
        {
            let register = RegisterRequest {
                username: username.to_string(),
                password: password.to_string(),
                display_name: None,
                device_name: Some(DEVICE_NAME.to_string()),
            };
            match rest.register(&register).await {
                Ok(response) => (response, true),
                // The account exists: the login error (a wrong password) is the real answer.
                Err(taken) if taken.code() == Some(ErrorCode::UsernameTaken) => return Err(error),
                Err(other) => return Err(other),
            }
        }
        Err(error) => return Err(error),
    };
    let server = rest.base.clone();
    // Keep the saved position only if it belongs to the same account on the same server.
    let state = load_config(config_path)
        .ok()
        .filter(|old| old.server == server && old.user.id == response.user.id)
        .and_then(|old| old.state);
    save_config(
        config_path,
        &CliConfig {
            server: server.clone(),
            token: response.token.clone(),
            user: response.user.clone(),
            state,
        },
    )?;
    if registered {
        tracing::debug!(username, "registered a new account");
    }
    Ok(response)
}

/// `natter send`: send `text` to a user (`to` is a username: their direct conversation is created
/// if needed) or to a conversation (`to` is `#<conversation_id>`) through the WebSocket outbox,
/// and return the acknowledgement (its `seq` is what to print).
pub async fn send(config_path: &Path, to: &str, text: &str) -> Result<Ack, ClientError> {
    let config = load_config(config_path)?;
    let rest = RestClient::new(&config.server)?.with_token(config.token.clone());
    let conversation_id = match parse_conversation(to)? {
        Some(id) => id,
        None => {
            let user = rest.user(to).await?;
            rest.create_conversation(&CreateConversationRequest::Direct { user_id: user.id })
                .await?
                .id
        }
    };

    let mut client_config = ClientConfig::new([config.server.clone()], config.token.clone());
    client_config.sync = false;
    let mut client = Client::start(client_config)?;
    // Only the ack matters here; dropping the events tells the client not to queue them.
    drop(client.events());
    let content = Content::Text {
        text: text.to_string(),
    };
    let result =
        tokio::time::timeout(SEND_TIMEOUT, client.send(conversation_id, content, None)).await;
    client.close().await;
    let ack = match result {
        Ok(ack) => ack?,
        Err(_) => {
            return Err(ClientError::Timeout(format!(
                "no acknowledgement within {SEND_TIMEOUT:?}: the message may or may not have been sent"
            )));
        }
    };
    Ok(ack)
}

/// `#12` → `Some(12)`; a username → `None`.
fn parse_conversation(to: &str) -> Result<Option<ConversationId>, ClientError> {
    match to.strip_prefix('#') {
        Some(id) => id
            .parse()
            .map(Some)
            .map_err(|_| ClientError::Config(format!("`{to}` is not a conversation id like #12"))),
        None if to.is_empty() => Err(ClientError::Config("no recipient given".into())),
        None => Ok(None),
    }
}

/// `natter listen`: print every event as a line until Ctrl-C, resuming where the last `listen`
/// stopped. Fails if the token is refused (log in again).
pub async fn listen(config_path: &Path) -> Result<(), ClientError> {
    let mut config = load_config(config_path)?;
    let mut client_config = ClientConfig::new([config.server.clone()], config.token.clone());
    client_config.state = config.state.clone();
    let mut client = Client::start(client_config)?;
    let Some(mut events) = client.events() else {
        return Err(ClientError::Closed);
    };
    let mut names = Names::default();
    names.learn_user(&config.user);
    // Senders are named from conversation events; a resumed `listen` may not get those for
    // conversations that did not change, so unknown names are looked up once per conversation.
    let rest = RestClient::new(&config.server)?.with_token(config.token.clone());
    let mut looked_up = HashSet::new();
    let mut stopped: Option<ClientError> = None;
    let mut saved = config.state.clone().unwrap_or_default();
    let mut save_timer = tokio::time::interval(SAVE_INTERVAL);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let terminate = terminated();
    tokio::pin!(terminate);

    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    if matches!(event, ClientEvent::Disconnected { reconnecting: false, .. }) {
                        stopped = client.stopped();
                    }
                    learn_names(&mut names, &rest, &mut looked_up, &event).await;
                    if !print_event(&mut names, &event) {
                        break;
                    }
                }
                None => break,
            },
            _ = save_timer.tick() => {
                let state = client.state();
                if state != saved {
                    config.state = Some(state.clone());
                    save_config(config_path, &config)?;
                    saved = state;
                }
            }
            _ = &mut ctrl_c => break,
            () = &mut terminate => break,
        }
    }

    // Print what is still queued, then save the state as of what was taken (and printed).
    client.close().await;
    while let Some(event) = events.recv().await {
        if !print_event(&mut names, &event) {
            break;
        }
    }
    config.state = Some(events.state());
    save_config(config_path, &config)?;
    match stopped {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Resolves on SIGTERM (a service manager's stop, `kill`, `timeout`), so that `listen` stops as on
/// Ctrl-C, saving its position; else the next `listen` would print up to `SAVE_INTERVAL` of
/// events again. Never resolves where there is no such signal.
async fn terminated() {
    #[cfg(unix)]
    if let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        terminate.recv().await;
        return;
    }
    std::future::pending::<()>().await
}

/// Look up the members of the conversation of an event whose user we cannot name yet.
async fn learn_names(
    names: &mut Names,
    rest: &RestClient,
    looked_up: &mut HashSet<ConversationId>,
    event: &ClientEvent,
) {
    let (conversation_id, user_id) = match event {
        ClientEvent::Message(message) => (message.conversation_id, message.sender_id),
        ClientEvent::Receipt(receipt) => (receipt.conversation_id, receipt.user_id),
        ClientEvent::Typing {
            conversation_id,
            user_id,
            ..
        } => (*conversation_id, *user_id),
        _ => return,
    };
    if names.knows(user_id) || !looked_up.insert(conversation_id) {
        return;
    }
    let lookup = tokio::time::timeout(NAME_LOOKUP_TIMEOUT, rest.conversation(conversation_id));
    match lookup.await {
        Ok(Ok(conversation)) => names.learn_conversation(&conversation),
        Ok(Err(error)) => tracing::debug!(conversation_id, %error, "cannot look up members"),
        Err(_) => tracing::debug!(conversation_id, "member lookup timed out"),
    }
}

/// Print one event; false when stdout is gone (e.g. a closed pipe), which ends `listen`.
fn print_event(names: &mut Names, event: &ClientEvent) -> bool {
    names.learn(event);
    match format_event(names, event) {
        Some(line) => writeln!(std::io::stdout().lock(), "{line}").is_ok(),
        None => true,
    }
}

/// Usernames by user id, learnt from the events themselves, for printing.
#[derive(Debug, Default)]
pub struct Names {
    users: std::collections::HashMap<UserId, String>,
}

impl Names {
    /// Remember a user's name.
    pub fn learn_user(&mut self, user: &User) {
        self.users.insert(user.id, user.username.clone());
    }

    /// Remember the names an event carries (conversation members, our own user).
    pub fn learn(&mut self, event: &ClientEvent) {
        match event {
            ClientEvent::Connected { hello, .. } => self.learn_user(&hello.user),
            ClientEvent::Conversation(conversation) => self.learn_conversation(conversation),
            _ => {}
        }
    }

    /// Remember the names of a conversation's members.
    pub fn learn_conversation(&mut self, conversation: &Conversation) {
        for member in &conversation.members {
            self.users.insert(member.user_id, member.username.clone());
        }
    }

    /// True when the user's name is known.
    pub fn knows(&self, user_id: UserId) -> bool {
        self.users.contains_key(&user_id)
    }

    /// A user's name, or `user <id>` when unknown.
    pub fn name(&self, user_id: UserId) -> String {
        self.users
            .get(&user_id)
            .cloned()
            .unwrap_or_else(|| format!("user {user_id}"))
    }
}

/// A message's text as one line on a terminal: control characters (a newline, a tab, an escape
/// sequence another user could use to rewrite the screen) are shown escaped, `\n`, `\u{1b}`.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut line = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    std::borrow::Cow::Owned(line)
}

/// One human-readable line for an event, like `[conv 3 #12] alice: hello`; `None` for events not
/// worth a line (someone stopped typing).
pub fn format_event(names: &Names, event: &ClientEvent) -> Option<String> {
    let line = match event {
        ClientEvent::Connected { server, hello } => {
            format!("-- connected to {server} as {}", hello.user.username)
        }
        ClientEvent::Synced { cursor } => format!("-- up to date (cursor {cursor})"),
        ClientEvent::Reset {
            cursor,
            server_cursor,
        } => format!(
            "-- the server never issued cursor {cursor} (it is at {server_cursor}): starting over"
        ),
        ClientEvent::Message(message) => {
            let head = match message.reply_to {
                Some(to) => format!(
                    "[conv {} #{} re #{to}]",
                    message.conversation_id, message.seq
                ),
                None => format!("[conv {} #{}]", message.conversation_id, message.seq),
            };
            match &message.content {
                Content::Text { text } => {
                    format!(
                        "{head} {}: {}",
                        names.name(message.sender_id),
                        printable(text)
                    )
                }
                Content::System { event } => format!("{head} * {}", describe_system(names, event)),
            }
        }
        ClientEvent::Skipped {
            conversation_id,
            first,
            last,
        } => format!("[conv {conversation_id}] messages #{first}..#{last} are not available"),
        ClientEvent::Receipt(receipt) => format!(
            "[conv {}] {} received #{}, read #{}",
            receipt.conversation_id,
            names.name(receipt.user_id),
            receipt.delivered_seq,
            receipt.read_seq
        ),
        ClientEvent::Conversation(conversation) => {
            let members: Vec<&str> = conversation
                .members
                .iter()
                .map(|m| m.username.as_str())
                .collect();
            let what = match (conversation.kind, &conversation.title) {
                (ConversationKind::Group, Some(title)) => format!("group \"{title}\""),
                (ConversationKind::Group, None) => "group".to_string(),
                (ConversationKind::Direct, _) => "direct chat".to_string(),
            };
            format!(
                "[conv {}] {what} with {} (last #{})",
                conversation.id,
                members.join(", "),
                conversation.last_seq
            )
        }
        ClientEvent::Typing {
            conversation_id,
            user_id,
            active,
            ..
        } => {
            if !active {
                return None;
            }
            format!(
                "[conv {conversation_id}] {} is typing…",
                names.name(*user_id)
            )
        }
        ClientEvent::Presence(presence) => format!(
            "-- {} is {}",
            names.name(presence.user_id),
            if presence.online { "online" } else { "offline" }
        ),
        ClientEvent::Disconnected {
            reason,
            code,
            reconnecting,
        } => format!(
            "-- disconnected{}: {reason}{}",
            code.map(|c| format!(" ({c})")).unwrap_or_default(),
            if *reconnecting {
                ", reconnecting"
            } else {
                ", stopped"
            }
        ),
    };
    Some(line)
}

fn describe_system(names: &Names, event: &SystemEvent) -> String {
    let list = |ids: &[UserId]| {
        ids.iter()
            .map(|&id| names.name(id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match event {
        SystemEvent::Created { by, title } => match title {
            Some(title) => format!("{} created \"{title}\"", names.name(*by)),
            None => format!("{} started the conversation", names.name(*by)),
        },
        SystemEvent::MembersAdded { by, user_ids } => {
            format!("{} added {}", names.name(*by), list(user_ids))
        }
        SystemEvent::MemberRemoved { by, user_id } => {
            format!("{} removed {}", names.name(*by), names.name(*user_id))
        }
        SystemEvent::MemberLeft { user_id } => format!("{} left", names.name(*user_id)),
        SystemEvent::RoleChanged { by, user_id, role } => format!(
            "{} made {} {}",
            names.name(*by),
            names.name(*user_id),
            role.as_str()
        ),
        SystemEvent::TitleChanged { by, title } => {
            format!("{} renamed the group to \"{title}\"", names.name(*by))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natter_proto::{Member, Message, Presence, Role};

    fn names() -> Names {
        let mut names = Names::default();
        names.learn_user(&User {
            id: 1,
            username: "alice".into(),
            display_name: "Alice".into(),
        });
        names
    }

    fn message(content: Content, reply_to: Option<u64>) -> ClientEvent {
        ClientEvent::Message(Message {
            conversation_id: 3,
            seq: 12,
            pos: 99,
            sender_id: 1,
            client_msg_id: None,
            content,
            reply_to,
            sent_at_ms: 0,
        })
    }

    #[test]
    fn a_message_prints_as_one_line_with_its_control_characters_escaped() {
        let names = names();
        let text = Content::Text {
            text: "red \u{1b}[31mALERT\u{1b}[0m\nsecond line\tend\u{7}".into(),
        };
        let line = format_event(&names, &message(text, None)).unwrap();
        assert_eq!(
            line,
            "[conv 3 #12] alice: red \\u{1b}[31mALERT\\u{1b}[0m\\nsecond line\\tend\\u{7}"
        );
        assert!(!line.chars().any(char::is_control));
        let plain = Content::Text {
            text: "ünïcode ✓ stays".into(),
        };
        assert_eq!(
            format_event(&names, &message(plain, None)).unwrap(),
            "[conv 3 #12] alice: ünïcode ✓ stays"
        );
    }

    #[test]
    fn messages_print_as_conversation_seq_sender_text() {
        let names = names();
        let text = Content::Text {
            text: "hello".into(),
        };
        assert_eq!(
            format_event(&names, &message(text.clone(), None)).unwrap(),
            "[conv 3 #12] alice: hello"
        );
        assert_eq!(
            format_event(&names, &message(text, Some(4))).unwrap(),
            "[conv 3 #12 re #4] alice: hello"
        );
        let system = Content::System {
            event: SystemEvent::MembersAdded {
                by: 1,
                user_ids: vec![2, 1],
            },
        };
        assert_eq!(
            format_event(&names, &message(system, None)).unwrap(),
            "[conv 3 #12] * alice added user 2, alice"
        );
    }

    #[test]
    fn names_are_learnt_from_conversations() {
        let mut names = names();
        let conversation = Conversation {
            id: 3,
            kind: ConversationKind::Group,
            title: Some("team".into()),
            members: vec![Member {
                user_id: 2,
                username: "bob".into(),
                display_name: "Bob".into(),
                role: Role::Member,
                delivered_seq: 0,
                read_seq: 0,
            }],
            last_seq: 7,
            last_pos: 70,
            created_at_ms: 0,
            last_activity_at_ms: 0,
            last_message: None,
            unread_count: None,
        };
        let event = ClientEvent::Conversation(conversation);
        names.learn(&event);
        assert_eq!(names.name(2), "bob");
        assert_eq!(
            format_event(&names, &event).unwrap(),
            "[conv 3] group \"team\" with bob (last #7)"
        );
        let presence = ClientEvent::Presence(Presence {
            user_id: 2,
            online: true,
            last_seen_at_ms: None,
        });
        assert_eq!(format_event(&names, &presence).unwrap(), "-- bob is online");
    }

    #[test]
    fn stopped_typing_prints_nothing() {
        let names = names();
        let typing = |active| ClientEvent::Typing {
            conversation_id: 3,
            user_id: 1,
            active,
            ttl_ms: 5000,
        };
        assert_eq!(
            format_event(&names, &typing(true)).unwrap(),
            "[conv 3] alice is typing…"
        );
        assert_eq!(format_event(&names, &typing(false)), None);
    }

    #[test]
    fn disconnects_say_whether_the_client_goes_on() {
        let names = names();
        let event = ClientEvent::Disconnected {
            reason: "revoked".into(),
            code: Some(4001),
            reconnecting: false,
        };
        assert_eq!(
            format_event(&names, &event).unwrap(),
            "-- disconnected (4001): revoked, stopped"
        );
    }

    #[test]
    fn recipients_are_usernames_or_conversation_ids() {
        assert_eq!(parse_conversation("#12").unwrap(), Some(12));
        assert_eq!(parse_conversation("bob").unwrap(), None);
        assert!(parse_conversation("#x").is_err());
        assert!(parse_conversation("").is_err());
    }

    #[test]
    fn config_files_round_trip_and_are_private() {
        let dir = std::env::temp_dir().join(format!("natter-cli-test-{}", std::process::id()));
        let path = dir.join("sub").join("client.json");
        let config = CliConfig {
            server: "http://127.0.0.1:8080".into(),
            token: "secret".into(),
            user: User {
                id: 1,
                username: "alice".into(),
                display_name: "Alice".into(),
            },
            state: Some(ClientState {
                cursor: 9,
                delivered: [(3, 4)].into(),
            }),
        };
        save_config(&path, &config).unwrap();
        assert_eq!(load_config(&path).unwrap(), config);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "config readable by others: {mode:o}");
        }
        let missing = load_config(&dir.join("nope.json")).unwrap_err();
        assert!(missing.to_string().contains("natter login"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
