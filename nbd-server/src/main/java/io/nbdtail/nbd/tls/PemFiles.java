package io.nbdtail.nbd.tls;

import org.bouncycastle.asn1.ASN1Sequence;
import org.bouncycastle.asn1.DERNull;
import org.bouncycastle.asn1.pkcs.PKCSObjectIdentifiers;
import org.bouncycastle.asn1.pkcs.PrivateKeyInfo;
import org.bouncycastle.asn1.pkcs.RSAPrivateKey;
import org.bouncycastle.asn1.sec.ECPrivateKey;
import org.bouncycastle.asn1.x509.AlgorithmIdentifier;
import org.bouncycastle.asn1.x9.X9ObjectIdentifiers;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Certificates and private keys in the PEM files of qemu's certificate directory layout. Keys may be PKCS#8
 * ({@code BEGIN PRIVATE KEY}), PKCS#1 ({@code BEGIN RSA PRIVATE KEY}) or SEC1 ({@code BEGIN EC PRIVATE KEY}):
 * GnuTLS's certtool and OpenSSL write the last two by default, and GnuTLS 3.7 reads only SEC1 for EC keys, so a
 * directory shared with qemu often holds them. Encrypted keys are refused (a daemon has nobody to ask for the
 * password).
 */
final class PemFiles {
    private static final Pattern BLOCK = Pattern.compile("-----BEGIN ([A-Z0-9 ]+)-----([^-]*)-----END \\1-----");

    private PemFiles() {
    }

    /** Every certificate in {@code file}, leaf first. */
    static X509Certificate[] certificates(final Path file, final String setting) throws IOException {
        final List<X509Certificate> chain = new ArrayList<>();
        try (InputStream in = Files.newInputStream(file)) {
            for (final var c : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
                chain.add((X509Certificate) c);
            }
        } catch (final CertificateException e) {
            throw new IllegalArgumentException(setting + ": " + file + " is not a PEM certificate: " + e.getMessage(),
                e);
        }
        if (chain.isEmpty()) {
            throw new IllegalArgumentException(setting + ": " + file + " holds no certificate (expected BEGIN"
                + " CERTIFICATE)");
        }
        return chain.toArray(X509Certificate[]::new);
    }

    /** The unencrypted private key in {@code file}: PKCS#8, PKCS#1 (RSA) or SEC1 (EC). */
    static PrivateKey privateKey(final Path file, final String setting) throws IOException {
        final Matcher m = BLOCK.matcher(Files.readString(file, StandardCharsets.US_ASCII));
        if (!m.find()) {
            throw badKey(file, setting, "no PEM block");
        }
        final String type = m.group(1);
        final byte[] der;
        try {
            der = Base64.getMimeDecoder().decode(m.group(2).strip());
        } catch (final IllegalArgumentException e) {
            throw badKey(file, setting, "bad base64");
        }
        try {
            final PrivateKeyInfo info = switch (type) {
                case "PRIVATE KEY" -> PrivateKeyInfo.getInstance(der);
                case "RSA PRIVATE KEY" -> new PrivateKeyInfo(new AlgorithmIdentifier(
                    PKCSObjectIdentifiers.rsaEncryption, DERNull.INSTANCE), RSAPrivateKey.getInstance(der));
                case "EC PRIVATE KEY" -> {
                    final ECPrivateKey ec = ECPrivateKey.getInstance(ASN1Sequence.getInstance(der));
                    if (ec.getParametersObject() == null) {
                        throw badKey(file, setting, "an EC key without its curve");
                    }
                    yield new PrivateKeyInfo(new AlgorithmIdentifier(X9ObjectIdentifiers.id_ecPublicKey,
                        ec.getParametersObject()), ec);
                }
                case "ENCRYPTED PRIVATE KEY" -> throw badKey(file, setting, "an encrypted key");
                default -> throw badKey(file, setting, "a '" + type + "' block");
            };
            final String algorithm = info.getPrivateKeyAlgorithm().getAlgorithm().equals(
                X9ObjectIdentifiers.id_ecPublicKey) ? "EC"
                : info.getPrivateKeyAlgorithm().getAlgorithm().equals(PKCSObjectIdentifiers.rsaEncryption) ? "RSA"
                : info.getPrivateKeyAlgorithm().getAlgorithm().getId().equals("1.3.101.112") ? "Ed25519" : null;
            if (algorithm == null) {
                throw badKey(file, setting, "a key of algorithm " + info.getPrivateKeyAlgorithm().getAlgorithm());
            }
            return KeyFactory.getInstance(algorithm).generatePrivate(new PKCS8EncodedKeySpec(info.getEncoded()));
        } catch (final GeneralSecurityException | IllegalArgumentException | IllegalStateException e) {
            if (e instanceof IllegalArgumentException iae && iae.getMessage() != null
                && iae.getMessage().startsWith(setting)) {
                throw iae;
            }
            throw badKey(file, setting, "an unreadable key (" + e.getMessage() + ")");
        }
    }

    private static IllegalArgumentException badKey(final Path file, final String setting, final String what) {
        return new IllegalArgumentException(setting + ": " + file + " holds " + what + "; it must be an unencrypted"
            + " RSA or EC private key in PEM (BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY): remove"
            + " a password with 'openssl pkey -in KEY -out " + file.getFileName() + "'");
    }
}
