package io.nbdtail.tools.online;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import picocli.CommandLine;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.Locale;
import java.util.Set;
import java.util.function.Function;

/**
 * Where the control API is and how to authenticate to it: a picocli mixin of every online command.
 *
 * <p>Each setting is taken from the first of: flag, environment, CLI config file, default.
 * <ul>
 *   <li>Server: {@code --server}, {@code $NBDTAIL_SERVER}, the config's {@code server},
 *       {@code http://127.0.0.1:10810}.</li>
 *   <li>Token: {@code --token}, {@code --token-file}, {@code $NBDTAIL_TOKEN}, {@code $NBDTAIL_TOKEN_FILE}, the
 *       config's {@code tokenFile}, {@code /var/lib/nbdtail/api-token}.</li>
 *   <li>Config file: {@code --cli-config}, {@code $NBDTAIL_CLI_CONFIG} (both must exist), else
 *       {@code $XDG_CONFIG_HOME/nbdtail/cli.json} or {@code ~/.config/nbdtail/cli.json} if it exists. JSON with
 *       the keys {@code server} and {@code tokenFile}; a relative {@code tokenFile} is relative to the config
 *       file's directory, and {@code ~/} means the home directory.</li>
 * </ul>
 */
public final class ServerOptions {
    /** The API address when nothing else is given: the server's default {@code --api-listen}. */
    public static final String DEFAULT_SERVER = "http://127.0.0.1:10810";
    /** The token file when nothing else is given: the server's with the default data directory. */
    public static final Path DEFAULT_TOKEN_FILE = Path.of("/var/lib/nbdtail/api-token");

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Set<String> CONFIG_KEYS = Set.of("server", "tokenFile");
    private static final String TOKEN_HINT = "pass --token-file or set NBDTAIL_TOKEN_FILE (the server writes"
        + " DATA/api-token on first start)";

    @Spec(Spec.Target.MIXEE)
    private CommandSpec mixee;

    @Option(names = "--server", paramLabel = "URL", description = "Control API URL (default: $NBDTAIL_SERVER, else"
        + " the CLI config's server, else " + DEFAULT_SERVER + ").")
    private String server;

    @Option(names = "--token", paramLabel = "TOKEN", description = "API token (default: $NBDTAIL_TOKEN, else read"
        + " from the token file). Other users can see it in ps: prefer --token-file.")
    private String token;

    @Option(names = "--token-file", paramLabel = "FILE", description = "File with the API token (default:"
        + " $NBDTAIL_TOKEN_FILE, else the CLI config's tokenFile, else /var/lib/nbdtail/api-token).")
    private Path tokenFile;

    @Option(names = "--cli-config", paramLabel = "FILE", description = "CLI config, JSON with server and tokenFile"
        + " (default: $NBDTAIL_CLI_CONFIG, else ~/.config/nbdtail/cli.json if it exists).")
    private Path cliConfig;

    private final Function<String, String> env;
    private final Path home;
    /** The config file's settings, read on first use; an empty object without a config file. */
    private JsonNode config;
    private Path configFile;

    /** As picocli makes it: the process's environment and home directory. */
    public ServerOptions() {
        this(System::getenv, Path.of(System.getProperty("user.home")));
    }

    /** With a given environment and home directory, for tests (Java cannot set its own environment). */
    ServerOptions(final Function<String, String> env, final Path home) {
        this.env = env;
        this.home = home;
    }

    /** Sets what the flags would, for tests; {@code null} for a flag not given. */
    ServerOptions flags(final String serverFlag, final String tokenFlag, final Path tokenFileFlag,
                        final Path cliConfigFlag) {
        this.server = serverFlag;
        this.token = tokenFlag;
        this.tokenFile = tokenFileFlag;
        this.cliConfig = cliConfigFlag;
        return this;
    }

    /**
     * Whether a {@code volume} command works through the API rather than on a data directory: yes without a
     * data directory, and yes with one from {@code $NBDTAIL_DATA_DIR} when a server option was given too.
     *
     * @param dataDirExplicit whether {@code --data-dir} was given or {@code $NBDTAIL_DATA_DIR} is set.
     * @throws CommandLine.ParameterException (a usage error) for {@code --data-dir} with a server option.
     */
    public boolean online(final boolean dataDirExplicit) {
        if (!dataDirExplicit) {
            return true;
        }
        final boolean serverGiven = server != null || token != null || tokenFile != null || cliConfig != null;
        if (serverGiven && mixee != null && mixee.commandLine() != null
            && mixee.commandLine().getParseResult().hasMatchedOption("--data-dir")) {
            throw new CommandLine.ParameterException(mixee.commandLine(), "--data-dir works on a data directory"
                + " directly, while --server, --token, --token-file and --cli-config talk to a running server: give"
                + " one or the other");
        }
        return serverGiven;
    }

    /** A client of the API these options name; the caller closes it. */
    public ApiClient connect() throws IOException {
        return new ApiClient(serverUrl(), token());
    }

    /** The API's base URL, without a trailing slash. */
    String serverUrl() throws IOException {
        if (server != null) {
            return normalise(server, "--server");
        }
        final String fromEnv = env("NBDTAIL_SERVER");
        if (fromEnv != null) {
            return normalise(fromEnv, "$NBDTAIL_SERVER");
        }
        final JsonNode fromConfig = config().get("server");
        if (fromConfig != null) {
            return normalise(fromConfig.asText(), "server in " + configFile);
        }
        return DEFAULT_SERVER;
    }

    /** The bearer token. */
    String token() throws IOException {
        if (token != null) {
            if (token.isBlank()) {
                throw new IllegalArgumentException("--token is empty; pass the server's API token (from its"
                    + " DATA/api-token), or use --token-file");
            }
            return token.strip();
        }
        if (tokenFile != null) {
            return readToken(tokenFile, "--token-file");
        }
        final String fromEnv = env("NBDTAIL_TOKEN");
        if (fromEnv != null) {
            return fromEnv.strip();
        }
        final String fileFromEnv = env("NBDTAIL_TOKEN_FILE");
        if (fileFromEnv != null) {
            return readToken(Path.of(fileFromEnv), "$NBDTAIL_TOKEN_FILE");
        }
        final JsonNode fromConfig = config().get("tokenFile");
        if (fromConfig != null) {
            return readToken(configPath(fromConfig.asText()), "tokenFile in " + configFile);
        }
        return readToken(DEFAULT_TOKEN_FILE, "the default");
    }

    /** {@code http://HOST:PORT} from what a person wrote: a URL, or {@code HOST:PORT} meaning plain HTTP. */
    static String normalise(final String text, final String source) {
        final String trimmed = text.strip();
        final String url = trimmed.contains("://") ? trimmed : "http://" + trimmed;
        final String usage = "invalid server URL '" + text + "' (from " + source + "): use http://HOST:PORT or"
            + " https://HOST:PORT, e.g. " + DEFAULT_SERVER;
        final URI uri;
        try {
            uri = new URI(url);
        } catch (final URISyntaxException e) {
            throw new IllegalArgumentException(usage, e);
        }
        final String scheme = uri.getScheme() == null ? "" : uri.getScheme().toLowerCase(Locale.ROOT);
        if (!scheme.equals("http") && !scheme.equals("https") || uri.getHost() == null || uri.getQuery() != null
            || uri.getFragment() != null || uri.getUserInfo() != null) {
            throw new IllegalArgumentException(usage);
        }
        return url.endsWith("/") ? url.replaceAll("/+$", "") : url;
    }

    private String readToken(final Path file, final String source) throws IOException {
        final String text;
        try {
            text = Files.readString(file, StandardCharsets.UTF_8);
        } catch (final NoSuchFileException e) {
            throw new IOException("no API token: " + TOKEN_HINT + "; " + file
                + " (" + source + ") does not exist", e);
        } catch (final AccessDeniedException e) {
            throw new IOException("cannot read the API token file " + file + " ("
                + source + "): permission denied; run as the server's user or root (the file is mode 0600), or"
                + " pass --token-file with a copy you can read", e);
        } catch (final IOException e) {
            throw new IOException("cannot read the API token file " + file + " (" + source + "): " + e.getMessage()
                + "; " + TOKEN_HINT, e);
        }
        final String line = text.lines().map(String::strip).filter(l -> !l.isEmpty()).findFirst().orElse("");
        if (line.isEmpty()) {
            throw new IOException("the API token file " + file + " (" + source + ") is empty; " + TOKEN_HINT);
        }
        return line;
    }

    /** The config file's settings, validated. */
    private JsonNode config() throws IOException {
        if (config != null) {
            return config;
        }
        final Path file;
        final String source;
        if (cliConfig != null) {
            file = cliConfig;
            source = "--cli-config";
        } else if (env("NBDTAIL_CLI_CONFIG") != null) {
            file = Path.of(env("NBDTAIL_CLI_CONFIG"));
            source = "$NBDTAIL_CLI_CONFIG";
        } else {
            final String xdg = env("XDG_CONFIG_HOME");
            final Path candidate = (xdg != null ? Path.of(xdg) : home.resolve(".config")).resolve("nbdtail")
                .resolve("cli.json");
            if (!Files.exists(candidate)) {
                config = JSON.createObjectNode();
                return config;
            }
            file = candidate;
            source = "the default location";
        }
        final String text;
        try {
            text = Files.readString(file, StandardCharsets.UTF_8);
        } catch (final NoSuchFileException e) {
            throw new IOException("CLI config file " + file + " (from " + source
                + ") does not exist; create it, e.g. {\"server\": \"" + DEFAULT_SERVER + "\", \"tokenFile\":"
                + " \"/var/lib/nbdtail/api-token\"}, or give another", e);
        } catch (final IOException e) {
            throw new IOException("cannot read the CLI config file " + file + " (from " + source + "): "
                + e.getMessage(), e);
        }
        final JsonNode node;
        try {
            node = JSON.readTree(text);
        } catch (final JsonProcessingException e) {
            throw new IllegalArgumentException("CLI config file " + file + " is not valid JSON: "
                + e.getOriginalMessage() + "; write an object such as {\"server\": \"" + DEFAULT_SERVER + "\"}", e);
        }
        if (node == null || !node.isObject()) {
            throw new IllegalArgumentException("CLI config file " + file + " must hold a JSON object such as"
                + " {\"server\": \"" + DEFAULT_SERVER + "\"}");
        }
        for (final Iterator<String> names = node.fieldNames(); names.hasNext(); ) {
            final String name = names.next();
            if (!CONFIG_KEYS.contains(name)) {
                throw new IllegalArgumentException("unknown key '" + name + "' in the CLI config file " + file
                    + "; the keys are server and tokenFile");
            }
            if (!node.get(name).isTextual() || node.get(name).asText().isBlank()) {
                throw new IllegalArgumentException("'" + name + "' in the CLI config file " + file + " must be a"
                    + " non-empty string");
            }
        }
        configFile = file;
        config = node;
        return config;
    }

    /** A path from the config file: {@code ~/} is the home directory, relative is to the config's directory. */
    private Path configPath(final String text) {
        if (text.equals("~") || text.startsWith("~/")) {
            return home.resolve(text.length() <= 2 ? "" : text.substring(2));
        }
        final Path path = Path.of(text);
        final Path dir = configFile.toAbsolutePath().getParent();
        return path.isAbsolute() || dir == null ? path : dir.resolve(path);
    }

    /** An environment variable, {@code null} if unset or blank. */
    private String env(final String name) {
        final String value = env.apply(name);
        return value == null || value.isBlank() ? null : value;
    }
}
