#!/usr/bin/env bash
# bootstrap.sh: prepare a fresh Debian 12+ / Ubuntu 22.04+ VM to run dr with Docker Compose, as root:
#
#   sudo deploy/bootstrap.sh --dry-run --deploy-key ~/deploy.pub --source .   # what it would do
#   sudo deploy/bootstrap.sh --deploy-key ~/deploy.pub --source .
#
# Docker Engine and the compose plugin from download.docker.com, a `deploy` user for CI deploys, ufw (SSH and
# HTTP/S only), unattended security upgrades, fail2ban, the /srv/dr layout with its owners and modes, and the
# dr-compose.service unit that starts the stack at boot; with --harden-ssh, no SSH passwords and no root
# login. Idempotent: every step checks first and changes only what differs, so a second run changes nothing
# and says so. Every change goes through run(), which --dry-run turns into a printed plan.
# docs/deployment.md is the walk-through.
set -euo pipefail

readonly DR_UID=10001 # the image's `dr` user and group (docs/container.md)
readonly DOCKER_KEY_FINGERPRINT=9DC858229FC7DD38854AE2D88D81803C0EBFCD88
readonly DOCKER_KEYRING=/etc/apt/keyrings/docker.asc
readonly UNIT_PATH=/etc/systemd/system/dr-compose.service
readonly SSHD_DROPIN=/etc/ssh/sshd_config.d/10-dr-hardening.conf
readonly ALL_STEPS="docker user firewall upgrades fail2ban ssh layout unit"

DRY_RUN=0
CHANGES=0
CHANGED=0 # set by put_file: 1 when the file was (or would be) written
APT_FRESH=0
DEPLOY_USER=deploy
DEPLOY_KEY=${DR_DEPLOY_KEY:-}
SOURCE=''
ENVIRONMENT=production
HARDEN_SSH=0
STEPS=$ALL_STEPS
DR_HOME=${DR_HOME:-/srv/dr}
OS_RELEASE=${DR_OS_RELEASE:-/etc/os-release}
OS_ID=''
OS_CODENAME=''
KEYS=()

usage() {
    cat <<'EOF'
Usage: bootstrap.sh [OPTIONS]

Prepare a fresh Debian 12+ / Ubuntu 22.04+ VM for dr (run as root). Safe to run again: it changes only what
differs from the wanted state, and says so.

Options:
  --deploy-key KEY|FILE  SSH public key (or a file of them) allowed to log in as the deploy user, with
                         the `restrict` option: commands only (also $DR_DEPLOY_KEY)
  --source DIR           a checkout of dr: copies compose/production.yml to /srv/dr/compose.yml and
                         compose/env/ENV.env.example to /srv/dr/.env when they do not exist yet
  --environment ENV      which env example --source copies: production (default) or staging
  --deploy-user NAME     the deploy user (default deploy)
  --harden-ssh           also forbid SSH password and root logins (refused when no other admin could
                         log in with a key afterwards)
  --only STEP[,STEP]     run only these steps: docker user firewall upgrades fail2ban ssh layout unit
  --dry-run              print every change it would make, and make none
  -h, --help             this help

Environment: DR_HOME (default /srv/dr), DR_DEPLOY_KEY.
EOF
}

say() { printf 'bootstrap: %s\n' "$*"; }
ok() { printf 'ok       %s\n' "$*"; }
warn() { printf 'bootstrap: warning: %s\n' "$*" >&2; }
die() {
    printf 'bootstrap: error: %s\n' "$*" >&2
    exit 1
}

# The command line of a change, as printed: words quoted for the shell, file contents shortened.
show() {
    local out='' word
    for word in "$@"; do
        if [[ $word == *$'\n'* ]]; then
            out+=" <$(printf '%s' "$word" | wc -l) lines>"
        else
            out+=" $(printf '%q' "$word")"
        fi
    done
    printf '%s' "${out# }"
}

# Every change to the host goes through here; with --dry-run it is printed instead of done.
run() {
    CHANGES=$((CHANGES + 1))
    if ((DRY_RUN)); then
        printf 'would    %s\n' "$(show "$@")"
    else
        printf 'run      %s\n' "$(show "$@")"
        "$@"
    fi
}

has_step() { [[ " $STEPS " == *" $1 "* ]]; }

# ---- checks (read only) --------------------------------------------------------------------------------------

installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

# "uid:gid" for "user:group" (names or numbers); empty when one does not exist (yet).
numeric_owner() {
    local user=${1%%:*} group=${1#*:} uid gid
    if [[ $user =~ ^[0-9]+$ ]]; then uid=$user; else uid=$(id -u "$user" 2>/dev/null) || return 0; fi
    if [[ $group =~ ^[0-9]+$ ]]; then gid=$group; else gid=$(getent group "$group" | cut -d: -f3) || return 0; fi
    if [[ -n $gid ]]; then printf '%s:%s' "$uid" "$gid"; fi
}

user_home() { getent passwd "$1" | cut -d: -f6 || true; }

# The ports sshd listens on, and the one this session came in on: all stay open in the firewall.
ssh_ports() {
    {
        if command -v sshd >/dev/null 2>&1; then sshd -T 2>/dev/null | awk '$1 == "port" { print $2 }' || true; fi
        if [[ -n ${SSH_CONNECTION:-} ]]; then awk '{ print $4 }' <<<"$SSH_CONNECTION"; fi
        echo 22
    } | grep -E '^[0-9]+$' | sort -un
}

# ---- changes ---------------------------------------------------------------------------------------------------

write_file() { # PATH MODE OWNER CONTENT
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    printf '%s' "$4" >"$tmp"
    chmod "$2" "$tmp"
    chown "$3" "$tmp"
    mv -f "$tmp" "$1"
}

add_authorized_key() { # FILE OWNER KEY
    [[ -e $1 ]] || install -m 0600 -o "${2%%:*}" -g "${2#*:}" /dev/null "$1"
    printf '%s\n' "$3" >>"$1"
}

# Fetch Docker's apt key and install it only if its fingerprint is the one Docker publishes.
download_docker_key() { # URL DEST FINGERPRINT
    local tmp home fingerprints
    tmp=$(mktemp)
    home=$(mktemp -d)
    curl -fsSL --retry 3 "$1" -o "$tmp"
    fingerprints=$(GNUPGHOME=$home gpg --batch --show-keys --with-colons "$tmp" | awk -F: '$1 == "fpr" { print $10 }')
    rm -rf "$home"
    if ! grep -qx "$3" <<<"$fingerprints"; then
        rm -f "$tmp"
        die "the key at $1 does not have the fingerprint $3: not installed"
    fi
    install -m 0644 "$tmp" "$2"
    rm -f "$tmp"
}

# ---- idempotent building blocks ------------------------------------------------------------------------------

ensure_mode_owner() { # PATH MODE OWNER
    local path=$1 mode=$2 want have
    [[ -e $path || $DRY_RUN -eq 0 ]] || return 0
    have=$(stat -c '%a' "$path")
    if ((8#$have != 8#$mode)); then run chmod "$mode" "$path"; fi
    want=$(numeric_owner "$3")
    have=$(stat -c '%u:%g' "$path")
    if [[ $want != "$have" ]]; then run chown "$3" "$path"; fi
}

ensure_dir() { # PATH MODE OWNER
    if [[ -d $1 ]]; then
        local before=$CHANGES
        ensure_mode_owner "$@"
        if ((CHANGES == before)); then ok "$1/ ($2 $3)"; fi
    else
        run install -d -m "$2" -o "${3%%:*}" -g "${3#*:}" "$1"
    fi
}

put_file() { # PATH MODE OWNER CONTENT: write it when the content differs; fix mode and owner
    local path=$1 content=$4
    CHANGED=0
    if [[ -f $path && $(<"$path") == "${content%$'\n'}" ]]; then
        local before=$CHANGES
        ensure_mode_owner "$path" "$2" "$3"
        if ((CHANGES == before)); then ok "$path"; fi
        return 0
    fi
    CHANGED=1
    run write_file "$path" "$2" "$3" "$content"
    if ((DRY_RUN)); then
        local line
        while IFS= read -r line; do printf '         | %s\n' "$line"; done <<<"${content%$'\n'}"
    fi
}

# Copy a file from the checkout, but never over an existing one: the server's copy may carry local changes.
copy_new() { # SOURCE DEST MODE OWNER
    if [[ ! -f $1 ]]; then
        warn "$1 not found: $2 not copied"
    elif [[ ! -e $2 ]]; then
        run install -m "$3" -o "${4%%:*}" -g "${4#*:}" "$1" "$2"
    elif cmp -s "$1" "$2"; then
        ensure_mode_owner "$2" "$3" "$4"
        ok "$2 (same as $1)"
    else
        ensure_mode_owner "$2" "$3" "$4"
        ok "$2 exists and differs from $1: kept (diff them, and copy by hand if you want the new one)"
    fi
}

apt_install() {
    local missing=() package
    for package in "$@"; do installed "$package" || missing+=("$package"); done
    if ((${#missing[@]} == 0)); then
        ok "installed: $*"
        return 0
    fi
    if ((!APT_FRESH)); then
        run apt-get update
        APT_FRESH=1
    fi
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

ensure_service() { # enabled at boot and running
    if systemctl is-enabled --quiet "$1" 2>/dev/null && systemctl is-active --quiet "$1" 2>/dev/null; then
        ok "$1 enabled and running"
    else
        run systemctl enable --now "$1"
    fi
}

# ---- steps -------------------------------------------------------------------------------------------------------

step_docker() {
    say "Docker Engine and the compose plugin (download.docker.com)"
    if docker compose version >/dev/null 2>&1; then
        ok "$(docker compose version) already works"
        ensure_service docker
        return 0
    fi
    local package
    for package in docker.io docker-compose docker-doc podman-docker containerd runc; do
        if installed "$package"; then
            die "the distribution's $package is installed and conflicts with Docker's packages: remove it
(apt-get remove docker.io docker-compose docker-doc podman-docker containerd runc) after checking no container
you need runs on it, then run this again"
        fi
    done
    apt_install ca-certificates curl gnupg
    ensure_dir /etc/apt/keyrings 0755 root:root
    if [[ -s $DOCKER_KEYRING ]]; then
        ok "$DOCKER_KEYRING"
    else
        run download_docker_key "https://download.docker.com/linux/$OS_ID/gpg" "$DOCKER_KEYRING" "$DOCKER_KEY_FINGERPRINT"
    fi
    put_file /etc/apt/sources.list.d/docker.list 0644 root:root \
        "deb [arch=$(dpkg --print-architecture) signed-by=$DOCKER_KEYRING] https://download.docker.com/linux/$OS_ID $OS_CODENAME stable
"
    if ((CHANGED)); then APT_FRESH=0; fi
    apt_install docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin
    ensure_service docker
}

step_user() {
    say "the $DEPLOY_USER user (deploys over SSH; in the docker group)"
    if id -u "$DEPLOY_USER" >/dev/null 2>&1; then
        ok "user $DEPLOY_USER exists"
    else
        run useradd --create-home --shell /bin/bash --user-group "$DEPLOY_USER"
    fi
    if id -nG "$DEPLOY_USER" 2>/dev/null | tr ' ' '\n' | grep -qx docker; then
        ok "$DEPLOY_USER is in the docker group"
    else
        run usermod -aG docker "$DEPLOY_USER"
    fi
    local home group auth key body
    home=$(user_home "$DEPLOY_USER")
    home=${home:-/home/$DEPLOY_USER}
    group=$(id -gn "$DEPLOY_USER" 2>/dev/null || echo "$DEPLOY_USER")
    auth=$home/.ssh/authorized_keys
    ensure_dir "$home/.ssh" 0700 "$DEPLOY_USER:$group"
    for key in "${KEYS[@]}"; do
        read -r _ body _ <<<"$key"
        if [[ -f $auth ]] && grep -qF -- "$body" "$auth"; then
            ok "$auth has the key ${key:0:40}..."
        else
            # restrict: commands only (what `ssh ... 'bash -s'` needs), no forwarding, no pty.
            run add_authorized_key "$auth" "$DEPLOY_USER:$group" "restrict $key"
        fi
    done
    if [[ -f $auth ]]; then
        ensure_mode_owner "$auth" 0600 "$DEPLOY_USER:$group"
    elif ((${#KEYS[@]} == 0)); then
        warn "no --deploy-key: $DEPLOY_USER cannot log in over SSH until a key is in $auth"
    fi
}

step_firewall() {
    say "ufw: incoming SSH, HTTP and HTTPS only (SSH is allowed before the firewall is enabled)"
    apt_install ufw
    local added='' rule port
    if command -v ufw >/dev/null 2>&1; then added=$(ufw show added 2>/dev/null || true); fi
    for rule in $(ssh_ports | sed 's|$|/tcp|') 80/tcp 443/tcp; do
        if grep -qxF "ufw allow $rule" <<<"$added"; then ok "ufw allows $rule"; else run ufw allow "$rule"; fi
    done
    local input='' output=''
    if [[ -r /etc/default/ufw ]]; then
        input=$(sed -n 's/^DEFAULT_INPUT_POLICY="\(.*\)"/\1/p' /etc/default/ufw)
        output=$(sed -n 's/^DEFAULT_OUTPUT_POLICY="\(.*\)"/\1/p' /etc/default/ufw)
    fi
    if [[ $input == DROP ]]; then ok "ufw denies other incoming"; else run ufw default deny incoming; fi
    if [[ $output == ACCEPT ]]; then ok "ufw allows outgoing"; else run ufw default allow outgoing; fi
    if command -v ufw >/dev/null 2>&1 && ufw status 2>/dev/null | grep -qx 'Status: active'; then
        ok "ufw is active"
    else
        port=$(ssh_ports | paste -sd, -)
        say "enabling ufw; SSH stays allowed on port(s) $port"
        run ufw --force enable
    fi
}

step_upgrades() {
    say "unattended-upgrades: security updates installed daily"
    apt_install unattended-upgrades
    put_file /etc/apt/apt.conf.d/20auto-upgrades 0644 root:root 'APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
'
    if [[ $OS_ID == debian ]]; then
        # Debian's default also takes point-release updates; keep to the security archive. (Ubuntu's default is
        # security-only already.) Docker's repository is not listed: an engine upgrade restarts the containers,
        # so it is done by hand. (${distro_codename} is for unattended-upgrades to expand, not the shell.)
        # shellcheck disable=SC2016
        put_file /etc/apt/apt.conf.d/52dr-security-only 0644 root:root '// Written by dr deploy/bootstrap.sh: security updates only.
#clear Unattended-Upgrade::Origins-Pattern;
Unattended-Upgrade::Origins-Pattern {
        "origin=Debian,codename=${distro_codename}-security,label=Debian-Security";
        "origin=Debian,codename=${distro_codename},label=Debian-Security";
};
'
    fi
}

step_fail2ban() {
    say "fail2ban: the sshd jail, reading the systemd journal"
    # The jail is in place before the package starts fail2ban: with Debian 12's default backend the sshd jail
    # looks for /var/log/auth.log, which does not exist there, and fail2ban does not start.
    apt_install python3-systemd
    ensure_dir /etc/fail2ban/jail.d 0755 root:root
    local ports
    ports=$(ssh_ports | paste -sd, -)
    put_file /etc/fail2ban/jail.d/dr-sshd.local 0644 root:root "# Written by dr deploy/bootstrap.sh.
[sshd]
enabled = true
backend = systemd
port = $ports
maxretry = 5
findtime = 10m
bantime = 1h
"
    apt_install fail2ban
    if ((CHANGED && !DRY_RUN)) && systemctl is-active --quiet fail2ban 2>/dev/null; then
        fail2ban-client -t >/dev/null || die "fail2ban rejects its configuration (fail2ban-client -t)"
        run systemctl restart fail2ban
    fi
    ensure_service fail2ban
}

# Without passwords and root logins, the way in is a key of a user who can become root: refuse to lock that out.
step_ssh() {
    if ((!HARDEN_SSH)); then
        say "sshd hardening skipped (--harden-ssh to forbid password and root logins)"
        return 0
    fi
    say "sshd: no password logins, no root login"
    local admin admins=() home
    for admin in $(getent group sudo admin | cut -d: -f4 | tr ',' ' '); do
        home=$(user_home "$admin")
        if [[ $admin != root && -n $home && -s $home/.ssh/authorized_keys ]]; then admins+=("$admin"); fi
    done
    ((${#admins[@]})) || die "--harden-ssh would lock you out: no user of group sudo has ~/.ssh/authorized_keys.
Create one (adduser NAME; usermod -aG sudo NAME; add your key), log in as it in a second session, then run this again"
    grep -Eqs '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config\.d/\*\.conf' /etc/ssh/sshd_config ||
        die "/etc/ssh/sshd_config does not include /etc/ssh/sshd_config.d/*.conf: harden it by hand"
    put_file "$SSHD_DROPIN" 0644 root:root "# Written by dr deploy/bootstrap.sh --harden-ssh. The first value sshd reads wins: keep this name first.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PubkeyAuthentication yes
"
    if ((CHANGED && !DRY_RUN)); then
        if ! sshd -t; then
            run rm -f "$SSHD_DROPIN"
            die "sshd rejects the configuration (sshd -t); $SSHD_DROPIN removed, nothing reloaded"
        fi
        run systemctl reload ssh
        warn "SSH now takes keys only, and no root: check a new login as ${admins[*]} before closing this session"
    fi
}

step_layout() {
    say "$DR_HOME: compose.yml, .env, dr.toml (root:$DR_UID 0640), secrets/ ($DR_UID 0711, files 0600)"
    local group file before
    if ! id -u "$DEPLOY_USER" >/dev/null 2>&1 && ((!DRY_RUN)); then
        die "no user $DEPLOY_USER yet: run the user step first (without --only, or --only user,layout)"
    fi
    group=$(id -gn "$DEPLOY_USER" 2>/dev/null || echo "$DEPLOY_USER")
    ensure_dir "$DR_HOME" 0750 "$DEPLOY_USER:$group"
    # 0711: nobody else can list or read the secrets (each file is 0600), but the deploy user's `docker compose`
    # can still resolve their paths when it loads the compose file.
    ensure_dir "$DR_HOME/secrets" 0711 "$DR_UID:$DR_UID"
    for file in "$DR_HOME"/secrets/*; do
        if [[ -f $file ]]; then
            before=$CHANGES
            ensure_mode_owner "$file" 0600 "$DR_UID:$DR_UID"
            if ((CHANGES == before)); then ok "$file ($DR_UID 0600)"; fi
        fi
    done
    if [[ -n $SOURCE ]]; then
        copy_new "$SOURCE/compose/production.yml" "$DR_HOME/compose.yml" 0644 "$DEPLOY_USER:$group"
        copy_new "$SOURCE/compose/env/$ENVIRONMENT.env.example" "$DR_HOME/.env" 0600 "$DEPLOY_USER:$group"
    else
        for file in compose.yml .env; do
            if [[ -e $DR_HOME/$file ]]; then
                ensure_mode_owner "$DR_HOME/$file" "$([[ $file == .env ]] && echo 0600 || echo 0644)" "$DEPLOY_USER:$group"
            else
                warn "no $DR_HOME/$file: run again with --source CHECKOUT, or copy it by hand"
            fi
        done
    fi
    if [[ -e $DR_HOME/dr.toml ]]; then
        before=$CHANGES
        ensure_mode_owner "$DR_HOME/dr.toml" 0640 "root:$DR_UID"
        if ((CHANGES == before)); then ok "$DR_HOME/dr.toml (root:$DR_UID 0640)"; fi
    elif [[ -n $SOURCE ]]; then
        # An example to edit: the service refuses to start on its placeholder values, never backs up with them.
        copy_new "$SOURCE/compose/dr.production.toml.example" "$DR_HOME/dr.toml" 0640 "root:$DR_UID"
    else
        warn "no $DR_HOME/dr.toml yet: write it (docs/deployment.md), then run this again to set its owner and mode"
    fi
}

# What bootstrap cannot do: the site's own settings and the secrets.
next_steps() {
    local missing=() name
    for name in dr-identity pgpass aws-credentials metrics-token; do
        [[ -s $DR_HOME/secrets/$name ]] || missing+=("$name")
    done
    if ((${#missing[@]})); then
        say "next: edit $DR_HOME/dr.toml and $DR_HOME/.env, and put ${missing[*]} in $DR_HOME/secrets/"
        say "      (owner $DR_UID, mode 0600), then init and a first backup: docs/deployment.md, 'First install'"
    fi
}

step_unit() {
    say "$UNIT_PATH: docker compose up -d at boot"
    put_file "$UNIT_PATH" 0644 root:root "# Written by dr deploy/bootstrap.sh: dr's compose stack, started at boot.
[Unit]
Description=dr backup appliance (docker compose stack in $DR_HOME)
Requires=docker.service
After=docker.service network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
User=$DEPLOY_USER
SupplementaryGroups=docker
WorkingDirectory=$DR_HOME
ExecStart=/usr/bin/docker compose --env-file $DR_HOME/.env -f $DR_HOME/compose.yml up -d
ExecStop=/usr/bin/docker compose --env-file $DR_HOME/.env -f $DR_HOME/compose.yml down
TimeoutStartSec=600
# Longer than the service's stop_grace_period (90 s), itself longer than dr's [service] grace (60 s).
TimeoutStopSec=180

[Install]
WantedBy=multi-user.target
"
    if ((CHANGED)); then run systemctl daemon-reload; fi
    if systemctl is-enabled --quiet dr-compose.service 2>/dev/null; then
        ok "dr-compose.service enabled at boot"
    else
        run systemctl enable dr-compose.service
    fi
}

# ---- set-up ------------------------------------------------------------------------------------------------------

detect_os() {
    [[ -r $OS_RELEASE ]] || die "cannot read $OS_RELEASE: which system is this?"
    local line key value id='' version='' codename='' ubuntu_codename='' pretty=''
    while IFS= read -r line; do
        [[ $line =~ ^([A-Z_]+)=(.*)$ ]] || continue
        key=${BASH_REMATCH[1]}
        value=${BASH_REMATCH[2]}
        value=${value#[\"\']}
        value=${value%[\"\']}
        case $key in
        ID) id=$value ;;
        VERSION_ID) version=$value ;;
        VERSION_CODENAME) codename=$value ;;
        UBUNTU_CODENAME) ubuntu_codename=$value ;;
        PRETTY_NAME) pretty=$value ;;
        esac
    done <"$OS_RELEASE"
    local major=${version%%.*} minor=${version#*.}
    [[ $major =~ ^[0-9]+$ ]] || major=0
    [[ $minor =~ ^[0-9]+$ && $version == *.* ]] || minor=0
    case $id in
    debian) ((major >= 12)) || id='' ;;
    ubuntu)
        ((major > 22 || (major == 22 && 10#$minor >= 4))) || id=''
        codename=${codename:-$ubuntu_codename}
        ;;
    *) id='' ;;
    esac
    if [[ -z $id || -z $codename ]]; then
        die "this is ${pretty:-an unknown system} ($OS_RELEASE): bootstrap.sh supports Debian 12 or later and Ubuntu
22.04 or later (tested on Debian 12, Ubuntu 22.04 and 24.04); on another system follow docs/deployment.md by hand"
    fi
    OS_ID=$id
    OS_CODENAME=$codename
    say "${pretty:-$id $version} ($OS_ID $OS_CODENAME)"
}

read_keys() {
    local text line
    [[ -n $DEPLOY_KEY ]] || return 0
    if [[ -f $DEPLOY_KEY ]]; then text=$(<"$DEPLOY_KEY"); else text=$DEPLOY_KEY; fi
    [[ $text != *PRIVATE\ KEY* ]] || die "--deploy-key got a PRIVATE key: give the public one (the .pub file)"
    while IFS= read -r line; do
        [[ -n ${line//[[:space:]]/} && $line != \#* ]] || continue
        if ! [[ $line =~ ^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)[[:space:]]+AAAA[A-Za-z0-9+/]+=*([[:space:]].*)?$ ]] ||
            { command -v ssh-keygen >/dev/null 2>&1 && ! ssh-keygen -l -f - <<<"$line" >/dev/null 2>&1; }; then
            die "--deploy-key: not an SSH public key: ${line:0:60}"
        fi
        KEYS+=("$line")
    done <<<"$text"
    ((${#KEYS[@]})) || die "--deploy-key: no SSH public key in ${DEPLOY_KEY:0:60}"
}

parse_args() {
    while (($#)); do
        case $1 in
        --dry-run) DRY_RUN=1 ;;
        --harden-ssh) HARDEN_SSH=1 ;;
        --deploy-key | --source | --environment | --deploy-user | --only)
            (($# >= 2)) || die "$1 needs a value (--help)"
            case $1 in
            --deploy-key) DEPLOY_KEY=$2 ;;
            --source) SOURCE=$2 ;;
            --environment) ENVIRONMENT=$2 ;;
            --deploy-user) DEPLOY_USER=$2 ;;
            --only) STEPS=${2//,/ } ;;
            esac
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            exit 2
            ;;
        esac
        shift
    done
    local step
    for step in $STEPS; do
        [[ " $ALL_STEPS " == *" $step "* ]] || die "unknown step '$step' in --only (steps: $ALL_STEPS)"
    done
    [[ $ENVIRONMENT =~ ^(production|staging)$ ]] || die "--environment is production or staging, not '$ENVIRONMENT'"
    [[ $DEPLOY_USER =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "--deploy-user: '$DEPLOY_USER' is not a valid user name"
    [[ -z $SOURCE || -d $SOURCE ]] || die "--source $SOURCE is not a directory"
    [[ $DR_HOME == /* ]] || die "DR_HOME must be an absolute path, not '$DR_HOME'"
    if [[ -n $SOURCE ]]; then SOURCE=$(cd "$SOURCE" && pwd); fi
}

main() {
    parse_args "$@"
    if ((DRY_RUN)); then say "dry run: nothing is changed; every change is printed as 'would'"; fi
    if ((EUID != 0)); then
        ((DRY_RUN)) || die "run as root (sudo $0 ...)"
        warn "not root: some checks cannot see everything, so the plan may list changes that are not needed"
    fi
    detect_os
    if ((!DRY_RUN)) && [[ $STEPS != layout && ! -d /run/systemd/system ]]; then
        die "systemd is not running here (a container?): bootstrap.sh sets up a VM. --dry-run works anywhere"
    fi
    read_keys

    local step
    for step in $ALL_STEPS; do
        if has_step "$step"; then "step_$step"; fi
    done

    if ((DRY_RUN)); then
        say "dry run: $CHANGES change(s) planned, none made"
    elif ((CHANGES == 0)); then
        say "nothing to change: this host is already set up"
    else
        say "done: $CHANGES change(s) made; running this again changes nothing"
    fi
    if has_step layout; then next_steps; fi
}

main "$@"
