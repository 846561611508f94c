// Small embedded English text the builtin tokenizer learns its BPE merges from. Changing a single
// character changes the vocabulary, so every miner must ship the same text (and thus the same model).
export const CORPUS = `
The morning was quiet, and the light came slowly over the hills. In the small town by the river,
people opened their windows and listened to the birds. A farmer walked along the road with his dog,
and a woman carried bread to the market. Children ran to school, laughing and calling to each other.
It was the kind of day when nothing seemed to happen, and yet everything was changing.

There is a story that people in the valley like to tell. Long ago, a young girl found a map in the
attic of her grandmother's house. The paper was old and yellow, and the ink had faded, but she could
still read the names of places that no one remembered. She showed the map to her brother, and
together they decided to follow it. They packed water, some apples, a blanket and a small lamp.
They left before the sun was up, and they did not tell anyone where they were going.

The path led them through the forest, across a stream and up into the mountains. At night they
slept under the stars and talked about what they might find. Perhaps there was gold, or a hidden
city, or a door into another world. On the third day they reached a cave. Inside, they found no
treasure at all, only a stone table and a book. The book was full of questions, and every page asked
the reader to think about something new: why the sky is blue, how the heart keeps time, what makes
a friend a friend, and where the river goes when it reaches the sea.

When they came home, their parents were angry and then very happy. The children did not bring back
gold, but they brought back the book, and they read it to everyone who would listen. Over the years
the town changed. The school grew larger, the library opened its doors every day, and people began
to ask questions of their own. Some of them became teachers, some became builders and doctors, and
some simply learned to look at the world with more care.

Computers are machines that follow instructions. A program is a list of those instructions, written
in a language that both people and machines can understand. When you type a message, a computer
turns each letter into a number, stores the numbers in memory, and sends them across the network to
another computer. There, the numbers become letters again, and the message appears on a screen. It
happens so quickly that we rarely think about it, but every step depends on rules that were designed
with great care by many people over many years.

A language model is a program that reads text and guesses what comes next. It learns by looking at
a large amount of writing and noticing which words tend to follow which. It does not know the world
the way a person does, but it can be useful: it can help write a letter, answer a question, or
summarize a long report. Running such a model takes time and energy, so it makes sense to share the
work among many computers. Each one does a small part, checks the results of the others, and is paid
for the work it does honestly.

The network is made of routers and miners. A user sends a request with a prompt and a few settings,
such as the maximum number of tokens and the temperature. The router chooses several miners, sends
them the same task, and waits for their answers. If the answers agree, the router returns the result
to the user. If they do not agree, the router looks more closely, compares the outputs, and decides
which miners did the work correctly. Good miners earn a better reputation and receive more work.

Water is the most important thing for life on our planet. Rain falls on the mountains, flows into
streams and rivers, and finally reaches the ocean. The sun warms the water, and some of it rises into
the air as vapor. High above the ground, the vapor cools and forms clouds, and the clouds bring rain
again. This cycle has continued for millions of years, and it shapes the land, the weather and the
lives of every plant and animal.

She opened the door and stepped into the garden. The roses were in bloom, red and white and pale
yellow, and the air smelled of earth after rain. An old man was sitting on the bench under the apple
tree. He smiled when he saw her and said, "I have been waiting for you. Sit down, there is something
I want to tell you." She sat beside him, and for a long time neither of them spoke. Then he told her
about the winter when the river froze, about the house they built together, and about the songs his
mother used to sing in the evening while the fire burned low.

Good writing is clear and simple. Use short sentences when you can, and choose words that your
reader will understand. Say what you mean, then stop. Read your work aloud, because the ear often
notices what the eye misses. Above all, think about the person who will read what you write: what do
they need to know, what questions will they have, and how can you help them find the answers?

Numbers have their own kind of beauty. One, two, three, four, five: each one follows the last, and
there is always another. Some numbers can be divided evenly, and some cannot. The numbers that cannot
be divided, except by one and themselves, are called prime, and people have studied them for more
than two thousand years. Even today there are simple questions about them that nobody can answer.
`;
