/* The C floor: the least any server can do for notifd's notification mode, in one epoll
 * loop with no framework, no database and no allocation per message. It keeps notifd's rule
 * that matters for latency under load: a client gets its next notification only after it
 * acknowledged the previous one (`OK`), and posts made meanwhile are coalesced into that
 * next one. Measured beside notifd in the same run, it shows how much of a figure is the
 * kernel's send and receive and the clients, and how much is notifd.
 *
 *   notif     -> "will send notifs"; the connection listens
 *   OK        -> the next notification, if a post came since the last one
 *   publish   -> "notif: classified" to every listener not waiting for an OK; the others
 *                get it when they acknowledge
 *   random?   -> a random integer
 *
 * Build and run (bench/targets.py does both): cc -O2 -o floor floor.c && ./floor PORT_FILE
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 65536
#define LINE_MAX_BYTES 256

static const char NOTIFICATION[] = "notif: classified\r\n";
static const char SUBSCRIBED[] = "will send notifs\r\n";

struct conn {
    int open, listening, waiting_ack, pending;
    size_t used;
    char line[LINE_MAX_BYTES];
};

static struct conn conns[MAX_FDS];
static int listeners[MAX_FDS];
static int listener_count;

static void say(int fd, const char *text, size_t len) {
    /* Replies are a few bytes on a socket that is read at once: a full buffer is the
       client's fault, and the floor drops rather than queues (notifd would queue). */
    (void)send(fd, text, len, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void notify(int fd) {
    conns[fd].waiting_ack = 1;
    conns[fd].pending = 0;
    say(fd, NOTIFICATION, sizeof NOTIFICATION - 1);
}

static void publish(void) {
    for (int i = 0; i < listener_count; i++) {
        int fd = listeners[i];
        if (conns[fd].waiting_ack)
            conns[fd].pending = 1;
        else
            notify(fd);
    }
}

static void on_line(int fd, char *line, size_t len) {
    if (len && line[len - 1] == '\r')
        len--;
    line[len] = 0;
    if (strcmp(line, "OK") == 0) {
        conns[fd].waiting_ack = 0;
        if (conns[fd].pending)
            notify(fd);
    } else if (strcmp(line, "notif") == 0) {
        if (!conns[fd].listening) {
            conns[fd].listening = 1;
            listeners[listener_count++] = fd;
        }
        say(fd, SUBSCRIBED, sizeof SUBSCRIBED - 1);
    } else if (strcmp(line, "publish") == 0) {
        publish();
    } else if (strcmp(line, "random?") == 0) {
        char out[32];
        int n = snprintf(out, sizeof out, "%ld\r\n", random() & 0x7fffffff);
        say(fd, out, (size_t)n);
    } else {
        say(fd, "ERR unknown command\r\n", 21);
    }
}

static void drop(int epoll, int fd) {
    epoll_ctl(epoll, EPOLL_CTL_DEL, fd, NULL);
    if (conns[fd].listening) {
        for (int i = 0; i < listener_count; i++)
            if (listeners[i] == fd) {
                listeners[i] = listeners[--listener_count];
                break;
            }
    }
    memset(&conns[fd], 0, sizeof conns[fd]);
    close(fd);
}

static void on_readable(int epoll, int fd) {
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            drop(epoll, fd);
        return;
    }
    struct conn *c = &conns[fd];
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            on_line(fd, c->line, c->used);
            c->used = 0;
        } else if (c->used < LINE_MAX_BYTES - 1) {
            c->line[c->used++] = buf[i];
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: floor PORT_FILE\n");
        return 2;
    }
    int server = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(server, (struct sockaddr *)&addr, sizeof addr) || listen(server, 1024)) {
        perror("floor: listen");
        return 1;
    }
    socklen_t len = sizeof addr;
    getsockname(server, (struct sockaddr *)&addr, &len);
    FILE *port_file = fopen(argv[1], "w");
    fprintf(port_file, "%d", ntohs(addr.sin_port));
    fclose(port_file);

    int epoll = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.fd = server};
    epoll_ctl(epoll, EPOLL_CTL_ADD, server, &event);
    struct epoll_event ready[512];
    for (;;) {
        int count = epoll_wait(epoll, ready, 512, -1);
        for (int i = 0; i < count; i++) {
            int fd = ready[i].data.fd;
            if (fd != server) {
                on_readable(epoll, fd);
                continue;
            }
            int client;
            while ((client = accept4(server, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                if (client >= MAX_FDS) {
                    close(client);
                    continue;
                }
                setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                conns[client].open = 1;
                struct epoll_event e = {.events = EPOLLIN, .data.fd = client};
                epoll_ctl(epoll, EPOLL_CTL_ADD, client, &e);
            }
        }
    }
}
