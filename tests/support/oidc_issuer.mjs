// A real OpenID Connect provider for the browser tests: npm `oidc-provider` (a certified
// implementation), on loopback, with its development sign-in pages (any user name signs in).
//
//   node tests/support/oidc_issuer.mjs PORT CONFIG.json
//
// CONFIG: {"clients": [oidc-provider client metadata], "groups": {"user": ["group", ...]}}.
// CONDA_STORE_OIDC_PROVIDER_MODULES names the node_modules holding it (scripts/install-sso.sh).
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const [port, configPath] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
const require = createRequire(path.join(process.env.CONDA_STORE_OIDC_PROVIDER_MODULES || process.cwd(), 'x.js'));
const Provider = require('oidc-provider').default ?? require('oidc-provider');

const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: config.clients,
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'groups'],
  claims: { openid: ['sub'], profile: ['preferred_username', 'name'], groups: ['groups'] },
  cookies: { keys: ['conda-store-tests-only'] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: id, groups: config.groups?.[id] ?? [] };
      },
    };
  },
});
provider.proxy = true;
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.listen(Number(port), '127.0.0.1', () => console.log(`issuer ${issuer}`));
