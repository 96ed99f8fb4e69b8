// A real OpenID Connect provider (the npm `oidc-provider` package, a
// certified implementation) for Atelier's sign-in tests. Started by
// crates/web/tests/oidc.rs; prints `ISSUER <url>` once it listens.
//
// Environment: CLIENT_ID, CLIENT_SECRET, REDIRECT_URIS (comma-separated),
// PORT (default: any free port).
//
// Discovery, authorization (code + PKCE S256, required here), the token
// endpoint, ID tokens signed RS256 with a key made at start, JWKS and
// UserInfo are all the library's own. Only the login and consent screens
// are scripted: the test says who signs in next (POST /test/login with
// {sub, email, email_verified, name}) and the interaction completes for
// that account without a form.

import http from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const clientId = process.env.CLIENT_ID || 'atelier';
const clientSecret = process.env.CLIENT_SECRET || 'atelier-test-secret';
const redirectUris = (process.env.REDIRECT_URIS || '').split(',').filter(Boolean);

const accounts = new Map();
let nextLogin = null;

function readBody(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (chunk) => { data += chunk; });
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}

const server = http.createServer();
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };

  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    pkce: { required: () => true },
    ttl: { AccessToken: 600, AuthorizationCode: 60, Grant: 3600, IdToken: 600, Interaction: 600, Session: 3600 },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(_ctx, sub) {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, email: account.email, email_verified: account.email_verified, name: account.name };
        },
      };
    },
  });
  const handle = provider.callback();

  server.on('request', async (req, res) => {
    try {
      if (req.method === 'POST' && req.url === '/test/login') {
        nextLogin = JSON.parse(await readBody(req));
        accounts.set(nextLogin.sub, nextLogin);
        res.end('ok');
        return;
      }
      if (req.method === 'GET' && req.url.startsWith('/interaction/')) {
        const details = await provider.interactionDetails(req, res);
        if (details.prompt.name === 'login') {
          if (!nextLogin) throw new Error('no login scripted');
          await provider.interactionFinished(req, res, { login: { accountId: nextLogin.sub } }, { mergeWithLastSubmission: false });
          return;
        }
        if (details.prompt.name === 'consent') {
          const grant = details.grantId
            ? await provider.Grant.find(details.grantId)
            : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
          grant.addOIDCScope(details.params.scope);
          const grantId = await grant.save();
          await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
          return;
        }
        throw new Error(`unexpected prompt ${details.prompt.name}`);
      }
      handle(req, res);
    } catch (error) {
      res.statusCode = 500;
      res.end(String(error && error.stack || error));
    }
  });

  process.stdout.write(`ISSUER ${issuer}\n`);
});

process.on('SIGTERM', () => process.exit(0));
