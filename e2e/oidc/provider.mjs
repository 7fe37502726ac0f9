// A certified OpenID provider (npm oidc-provider) for the single sign-on tests: listens on
// 127.0.0.1:PORT (argv[2]; 0 picks one) and prints "issuer http://127.0.0.1:PORT" once it
// listens. Clients: `convoy`, public and native (PKCE, loopback redirects on any port, and the
// device flow), and with argv[4] (the hub dashboard's redirect URI) `convoy-dashboard`, a
// confidential web client whose secret is `dashboard-secret`. Users from argv[3] (JSON:
// {"login": {"email": ..., "groups": [...]}}). Its development login page takes any password.
import Provider from 'oidc-provider';
import http from 'node:http';

const users = JSON.parse(process.argv[3] || '{}');
const dashboardRedirect = process.argv[4];
const server = http.createServer();
await new Promise((resolve) => server.listen(Number(process.argv[2] || 0), '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'convoy',
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
  }, ...(dashboardRedirect ? [{
    client_id: 'convoy-dashboard',
    client_secret: 'dashboard-secret',
    application_type: 'web',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [dashboardRedirect],
  }] : [])],
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  scopes: ['openid', 'email', 'groups'],
  async findAccount(ctx, id) {
    const user = users[id] || { email: `${id}@example.com`, groups: [] };
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: user.email, email_verified: true, groups: user.groups };
      },
    };
  },
  // ID tokens carry the claims themselves (the hub reads no userinfo endpoint).
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true }, deviceFlow: { enabled: true } },
  ttl: { IdToken: 300 },
});
provider.proxy = false;
server.on('request', provider.callback());
console.log(`issuer ${issuer}`);
