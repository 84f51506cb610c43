// A real OpenID provider (oidc-provider) for jwtauth's and introspect's
// tests. Listens on a free loopback port and prints "ISSUER <url>" once
// ready; the Go test that started it reads that line and kills it when
// done.
//
// Clients (client_credentials only):
//   svc / svc-secret         asks for tokens
//   gateway / gateway-secret introspects them (client_secret_basic)
// DPoP (RFC 9449) is on: a token request with a DPoP proof gets a token
// bound to its key.
// Resources:
//   https://api.example.com    RFC 9068 JWT access tokens (at+jwt)
//   https://opaque.example.com opaque access tokens, for introspection
import http from 'node:http';
import crypto from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const alg = process.env.OP_JWT_ALG || 'ES256';

function key(type, opts, use) {
  const { privateKey } = crypto.generateKeyPairSync(type, opts);
  const jwk = privateKey.export({ format: 'jwk' });
  jwk.kid = `${type}-${crypto.randomBytes(4).toString('hex')}`;
  jwk.use = use;
  return jwk;
}

const resources = {
  'https://api.example.com': {
    scope: 'orders:read orders:write',
    audience: 'https://api.example.com',
    accessTokenFormat: 'jwt',
    accessTokenTTL: 600,
    jwt: { sign: { alg } },
  },
  'https://opaque.example.com': {
    scope: 'orders:read',
    audience: 'https://opaque.example.com',
    accessTokenFormat: 'opaque',
    accessTokenTTL: 600,
  },
};

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    jwks: {
      keys: [
        key('rsa', { modulusLength: 2048 }, 'sig'),
        key('ec', { namedCurve: 'P-256' }, 'sig'),
        key('ed25519', {}, 'sig'),
      ],
    },
    clients: [
      { client_id: 'svc', client_secret: 'svc-secret', grant_types: ['client_credentials'], redirect_uris: [], response_types: [] },
      { client_id: 'gateway', client_secret: 'gateway-secret', grant_types: ['client_credentials'], redirect_uris: [], response_types: [] },
    ],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      dPoP: { enabled: true },
      introspection: {
        enabled: true,
        // The gateway, an authenticated resource server, may introspect
        // tokens issued to other clients.
        allowedPolicy: async (ctx, client) => client.clientId === 'gateway',
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, indicator) => {
          const info = resources[indicator];
          if (!info) throw new errors.InvalidTarget();
          return info;
        },
      },
    },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  server.on('request', provider.callback());
  console.log(`ISSUER ${issuer}`);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
