#!/usr/bin/env bash
# make demo: the whole main job on the built-in lab, the way an operator runs it.
#   0. lab scaffolding: the MongoDB wire-protocol test server and sshd for the backup's uploads pull
#   1. site.yml (every tier; the app nodes start on v1, the node role's bootstrap release)
#   2. deploy v1 then v2 with the rolling update (health-gated, canary first)
#   3. a verified backup set (backup.yml)
#   4. the fleet status table, and the HTTPS URL
# Run through the Makefile (it sets PATH, ANSIBLE_CONFIG, ANSIBLE_COLLECTIONS_PATH, CONTAINERS_CONF).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RELEASES="$ROOT/.cache/releases"
INVENTORY="$ROOT/inventories/lab"
cd "$ROOT"

node tests/support/sample_app/scripts/build-releases.js --out "$RELEASES" >/dev/null

release_args() {  # -e rolling_update_artifact=... -e rolling_update_artifact_sha256=... for a version
  python3 - "$RELEASES/releases.json" "$1" "$RELEASES" <<'PY'
import json, sys
for item in json.load(open(sys.argv[1])):
    if item["version"] == sys.argv[2]:
        print("rolling_update_artifact=%s/%s rolling_update_artifact_sha256=%s" % (sys.argv[3], item["file"], item["sha256"]))
PY
}

echo "=== demo 0/5: lab scaffolding (MongoDB test server, sshd on the app nodes)"
ansible-playbook -i "$INVENTORY" lab/scaffolding.yml
echo "=== demo 1/5: site.yml on the lab"
ansible-playbook -i "$INVENTORY" playbooks/site.yml
for version in 1.0.0 2.0.0; do
  read -r artifact sha <<<"$(release_args "$version")"
  echo "=== demo $([[ $version == 1.0.0 ]] && echo 2 || echo 3)/5: rolling deploy of v$version"
  ansible-playbook -i "$INVENTORY" playbooks/deploy.yml -e "$artifact" -e "$sha"
done
echo "=== demo 4/5: a verified backup set"
ansible-playbook -i "$INVENTORY" playbooks/backup.yml
echo "=== demo 5/5: fleet status"
ansible-playbook -i "$INVENTORY" playbooks/status.yml -e status_report_path="$ROOT/.cache/demo-status.json"
lb_address=$(ansible-inventory -i "$INVENTORY" --host lb1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["nodeops_node_address"])')
server_name=$(ansible-inventory -i "$INVENTORY" --host lb1 | python3 -c 'import json,sys; d=json.load(sys.stdin); print((d.get("nginx_tls_server_names") or ["localhost"])[0])')
echo
echo "The app, through the load balancer (self-signed certificate):"
echo "  curl -k --resolve $server_name:443:$lb_address https://$server_name/version"
curl -fsSk --resolve "$server_name:443:$lb_address" "https://$server_name/version"; echo
echo "Status table saved as JSON: $ROOT/.cache/demo-status.json"
